"""The sandbox is a real cluster: scheduling, kwok, PDB-guarded eviction, CEL admission, CLIs."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from helpers.e2e import deployment, is_ready, wait_for
from nodeos.sandbox import cluster, components, kwok

pytestmark = pytest.mark.sandbox


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        "the namespace's default service account",
        lambda: bool(core.list_namespaced_service_account(name).items),
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture
def fake_nodes(kube: client.ApiClient) -> Iterator[list[str]]:
    core = client.CoreV1Api(kube)
    suffix = uuid.uuid4().hex[:6]
    names = [f"kwok-{suffix}-{i}" for i in range(3)]
    for name in names:
        core.create_node(kwok.fake_node(name, labels={"sandbox-test": suffix}))
    yield names
    for name in names:
        core.delete_node(name)


def node_ready(core: client.CoreV1Api, name: str) -> bool:
    return is_ready(core.read_node(name))


def pod(name: str, app: str, node_selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeSelector": node_selector,
            "tolerations": [kwok.FAKE_NODE_TOLERATION],
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }


def running_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
    ]


def test_api_server_reports_the_pinned_version(kube: client.ApiClient) -> None:
    info = client.VersionApi(kube).get_code()
    assert info.git_version == components.KUBERNETES_VERSION


def test_kwok_nodes_become_ready_and_deployment_pods_run_on_them(
    kube: client.ApiClient, namespace: str, fake_nodes: list[str]
) -> None:
    core = client.CoreV1Api(kube)
    wait_for("kwok nodes Ready", lambda: all(node_ready(core, n) for n in fake_nodes))
    suffix = core.read_node(fake_nodes[0]).metadata.labels["sandbox-test"]
    client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment("web", 6, {"sandbox-test": suffix})
    )
    wait_for("6 Running pods", lambda: len(running_pods(core, namespace, "web")) == 6)
    pods = running_pods(core, namespace, "web")
    assert {p.spec.node_name for p in pods} <= set(fake_nodes)
    assert all(p.status.pod_ip for p in pods), "kwok assigns pod IPs to running pods"


def evict(core: client.CoreV1Api, namespace: str, pod: str) -> int:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    try:
        core.create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as error:
        return int(error.status)
    return 201


def test_pdb_refuses_an_eviction_that_would_violate_it_and_allows_one_that_would_not(
    kube: client.ApiClient, namespace: str, fake_nodes: list[str]
) -> None:
    core = client.CoreV1Api(kube)
    suffix = core.read_node(fake_nodes[0]).metadata.labels["sandbox-test"]
    # Bare pods (no controller) so an evicted pod is not replaced and the budget stays spent.
    for index in range(3):
        core.create_namespaced_pod(namespace, pod(f"db-{index}", "db", {"sandbox-test": suffix}))
    client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "db"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}},
        },
    )

    def budget_allows(count: int) -> bool:
        pdb = client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget("db", namespace)
        status = pdb.status
        return bool(
            status
            and status.current_healthy == 3
            and status.disruptions_allowed == count
            and status.observed_generation == pdb.metadata.generation
        )

    wait_for("the disruption controller to allow one disruption", lambda: budget_allows(1))
    first, second = (p.metadata.name for p in running_pods(core, namespace, "db")[:2])

    assert evict(core, namespace, first) == 201
    # One disruption was allowed and it is spent: the next eviction must be refused.
    assert evict(core, namespace, second) == 429
    assert core.read_namespaced_pod(second, namespace).metadata.deletion_timestamp is None


def test_crd_with_cel_rule_rejects_invalid_objects_naming_the_field(
    kube: client.ApiClient,
) -> None:
    ext = client.ApiextensionsV1Api(kube)
    group = f"g{uuid.uuid4().hex[:6]}.sandbox.nodeos.dev"
    ext.create_custom_resource_definition(widget_crd(group))
    wait_for(
        "the CRD to be Established",
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(f"widgets.{group}").status.conditions or []
        ),
    )
    custom = client.CustomObjectsApi(kube)

    def create(spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}}
        custom.create_cluster_custom_object(group, "v1", "widgets", {**body, "spec": spec})

    with pytest.raises(ApiException) as rejected:
        create({"minReplicas": 5, "maxReplicas": 2})
    assert rejected.value.status == 422
    message = json.loads(rejected.value.body)["message"]
    assert "spec.maxReplicas" in message
    assert "maxReplicas must be at least minReplicas" in message

    with pytest.raises(ApiException) as wrong_type:
        create({"minReplicas": "many", "maxReplicas": 2})
    assert "spec.minReplicas" in json.loads(wrong_type.value.body)["message"]

    create({"minReplicas": 1, "maxReplicas": 2})
    stored = custom.get_cluster_custom_object(group, "v1", "widgets", "w")
    assert stored["spec"] == {"minReplicas": 1, "maxReplicas": 2}
    ext.delete_custom_resource_definition(f"widgets.{group}")


def widget_crd(group: str) -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer"},
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.maxReplicas >= self.minReplicas",
                "message": "maxReplicas must be at least minReplicas",
                "fieldPath": ".maxReplicas",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema},
                        }
                    },
                }
            ],
        },
    }


def run_tool(binary: Path, *args: str, kubeconfig: Path) -> str:
    result = subprocess.run(
        [str(binary), *args, f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{binary.name} {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def test_kubectl_talks_to_the_sandbox(
    sandbox: cluster.Sandbox, sandbox_binaries: dict[str, Path]
) -> None:
    out = run_tool(
        sandbox_binaries["kubectl"], "version", "-o", "json", kubeconfig=sandbox.kubeconfig
    )
    version = json.loads(out)
    assert version["serverVersion"]["gitVersion"] == components.KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == components.KUBERNETES_VERSION
    namespaces = run_tool(
        sandbox_binaries["kubectl"],
        "get",
        "namespaces",
        "-o",
        "name",
        kubeconfig=sandbox.kubeconfig,
    )
    assert "namespace/kube-system" in namespaces.split()


def test_helm_installs_and_uninstalls_a_chart(
    sandbox: cluster.Sandbox,
    sandbox_binaries: dict[str, Path],
    namespace: str,
    kube: client.ApiClient,
) -> None:
    helm = sandbox_binaries["helm"]
    chart = Path(__file__).parent.parent / "fixtures" / "charts" / "hello"
    run_tool(
        helm,
        "install",
        "hello",
        str(chart),
        "--namespace",
        namespace,
        "--wait",
        "--set",
        "greeting=hi",
        kubeconfig=sandbox.kubeconfig,
    )
    core = client.CoreV1Api(kube)
    assert core.read_namespaced_config_map("hello", namespace).data == {"greeting": "hi"}
    listing = json.loads(
        run_tool(
            helm, "list", "--namespace", namespace, "-o", "json", kubeconfig=sandbox.kubeconfig
        )
    )
    assert [(r["name"], r["status"]) for r in listing] == [("hello", "deployed")]
    run_tool(helm, "uninstall", "hello", "--namespace", namespace, kubeconfig=sandbox.kubeconfig)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("hello", namespace)
    assert gone.value.status == 404
