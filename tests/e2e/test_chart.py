"""The Helm chart in the sandbox: it installs, the operator image runs its Deployment's container
with its ServiceAccount through a whole rollout, and upgrade/uninstall leave nothing behind but
the CRDs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from helpers.e2e import (
    service_account_token,
    simulator_process,
    token_kubeconfig,
    wait_for,
)
from helpers.image import ImageOperator, rendered_deployment
from nodeos.sandbox import cluster, processes

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "nodeos-rbac"
RELEASE = "nodeos"


def run(binary: Path, sandbox: cluster.Sandbox, *args: str) -> str:
    result = subprocess.run(
        [str(binary), f"--kubeconfig={sandbox.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{binary.name} {args}: {result.stderr}"
    return result.stdout


def owned_objects(kube: client.ApiClient) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE}"
    found = []
    rbac = client.RbacAuthorizationV1Api(kube)
    found += [
        f"ClusterRole/{o.metadata.name}"
        for o in rbac.list_cluster_role(label_selector=selector).items
    ]
    found += [
        f"ClusterRoleBinding/{o.metadata.name}"
        for o in rbac.list_cluster_role_binding(label_selector=selector).items
    ]
    found += [
        f"Role/{o.metadata.name}"
        for o in rbac.list_namespaced_role(NAMESPACE, label_selector=selector).items
    ]
    found += [
        f"RoleBinding/{o.metadata.name}"
        for o in rbac.list_namespaced_role_binding(NAMESPACE, label_selector=selector).items
    ]
    core = client.CoreV1Api(kube)
    found += [
        f"ServiceAccount/{o.metadata.name}"
        for o in core.list_namespaced_service_account(NAMESPACE, label_selector=selector).items
    ]
    found += [
        f"Service/{o.metadata.name}"
        for o in core.list_namespaced_service(NAMESPACE, label_selector=selector).items
    ]
    apps = client.AppsV1Api(kube)
    found += [
        f"Deployment/{o.metadata.name}"
        for o in apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items
    ]
    policy = client.PolicyV1Api(kube)
    found += [
        f"PDB/{o.metadata.name}"
        for o in policy.list_namespaced_pod_disruption_budget(
            NAMESPACE, label_selector=selector
        ).items
    ]
    return sorted(found)


def test_the_image_runs_the_charts_container_through_a_rollout_and_uninstall_is_clean(
    sandbox: cluster.Sandbox,
    sandbox_binaries: dict[str, Path],
    kube: client.ApiClient,
    crds_installed: None,
    operator_image: str,
    tmp_path: Path,
) -> None:
    helm, kubectl = sandbox_binaries["helm"], sandbox_binaries["kubectl"]
    chart = str(REPO / "charts/nodeos")
    installed = run(
        helm,
        sandbox,
        "install",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--set",
        "replicaCount=0",
        "--set",
        f"metrics.port={processes.free_port()}",
        "--set",
        f"health.port={processes.free_port()}",
        "--wait",
    )
    deployment = rendered_deployment(
        run(helm, sandbox, "get", "manifest", RELEASE, "--namespace", NAMESPACE)
    )
    # NOTES.txt says what to do next, with this release's names
    assert f"kubectl -n {NAMESPACE} create secret generic nodeos-talosconfig" in installed
    assert f"may live in: {NAMESPACE}." in installed
    # the Role and RoleBinding for Secrets, in the release namespace only by default
    assert len(owned_objects(kube)) == 10, " ".join(owned_objects(kube))

    with simulator_process(
        sandbox,
        tmp_path / "sim",
        "--control-planes",
        "1",
        "--workers",
        "2",
        "--reboot-seconds",
        "1",
    ) as sim:
        core = client.CoreV1Api(kube)
        restricted = token_kubeconfig(sandbox, kubectl, tmp_path / "sa.kc", RELEASE, NAMESPACE)
        for verb, allowed in (
            ("list secrets -A", "no"),
            (f"get secrets -n {NAMESPACE}", "yes"),
            ("get secrets -n default", "no"),
            ("get secrets -n kube-system", "no"),
            ("patch nodes", "yes"),
            ("create pods --subresource=eviction -A", "yes"),
            ("delete nodes", "no"),
        ):
            answer = subprocess.run(
                [str(kubectl), f"--kubeconfig={restricted}", "auth", "can-i", *verb.split()],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            assert answer == allowed, f"the ServiceAccount can {verb}: {answer}"
        # the Deployment's container, from the image, as its user, with the chart's account
        op = ImageOperator(operator_image, tmp_path)
        token = service_account_token(sandbox, kubectl, RELEASE, NAMESPACE)
        op.start(sandbox, deployment, token, NAMESPACE, sim.talosconfig)
        try:
            custom = client.CustomObjectsApi(kube)
            custom.create_cluster_custom_object(
                "nodeos.dev",
                "v1alpha1",
                "upgradeplans",
                {
                    "apiVersion": "nodeos.dev/v1alpha1",
                    "kind": "UpgradePlan",
                    "metadata": {"name": "rbac"},
                    "spec": {
                        "target": {"version": "v1.13.9"},
                        "nodeSelector": {"matchLabels": {"type": "kwok"}},
                    },
                },
            )

            def phase() -> str:
                plan = custom.get_cluster_custom_object(
                    "nodeos.dev", "v1alpha1", "upgradeplans", "rbac"
                )
                return str((plan.get("status") or {}).get("phase"))

            try:
                wait_for("the rollout to complete", lambda: phase() == "Completed", 120)
            except AssertionError:
                raise AssertionError(op.logs()) from None
            for name in sim.info["nodes"]:
                node = core.read_node(name)
                assert node.status.node_info.os_image == "Talos (v1.13.9)"
                assert not node.spec.unschedulable
            log = "\n".join(p.read_text() for p in tmp_path.glob("operator-*.log"))
            denied = re.search(r"Forbidden|\b403\b", log)  # not a port such as :40327
            assert denied is None, f"no permission was missing: {log[-2000:]}"
            custom.delete_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", "rbac")
            wait_for(
                "the plan deleted",
                lambda: (
                    not custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans")[
                        "items"
                    ]
                ),
            )
        finally:
            op.stop()
        for name in sim.info["nodes"]:
            core.delete_node(name)

    run(
        helm,
        sandbox,
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "replicaCount=0",
        "--set",
        "metrics.port=9090",
        "--wait",
    )
    service = client.CoreV1Api(kube).read_namespaced_service(f"{RELEASE}-metrics", NAMESPACE)
    assert service.spec.ports[0].port == 9090
    assert len(owned_objects(kube)) == 10, " ".join(owned_objects(kube))

    run(helm, sandbox, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    wait_for("objects removed", lambda: owned_objects(kube) == [], 30)
    crds = client.ApiextensionsV1Api(kube).list_custom_resource_definition().items
    assert {"upgradeplans.nodeos.dev", "nodeosconfigs.nodeos.dev"} <= {
        c.metadata.name for c in crds
    }, "Helm keeps CRDs on uninstall"
