"""CEL health checks on the real sandbox, run by the operator under the chart's ServiceAccount.

A CRD installed for the test (``probes.gates.example.com``) stands for what users gate on (a
CephCluster, a database operator's status). The chart grants read on it through
``healthCheckAccess``. A false Before check holds every start until it turns true; a false
After check rolls the node back through the OS API, verified on its old version.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from helpers.e2e import (
    OperatorProcess,
    plan_records,
    simulator_process,
    token_kubeconfig,
    wait_for,
)
from helpers.gates import PROBE_GROUP, PROBE_PLURAL, probes, set_probe
from nodeos.sandbox import cluster
from nodeos.simulator.fleet import read_journal

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "nodeos-gates"
RELEASE = "gates"
OLD, NEW = "v1.12.4", "v1.13.9"


def helm(sandbox: cluster.Sandbox, binary: Path, *args: str) -> None:
    result = subprocess.run(
        [str(binary), f"--kubeconfig={sandbox.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def gated(
    sandbox: cluster.Sandbox,
    sandbox_binaries: dict[str, Path],
    kube: client.ApiClient,
    crds_installed: None,
) -> Iterator[client.CustomObjectsApi]:
    """The chart installed with read on probes, and two probes in ``default``."""
    with probes(kube, "before", "after") as custom:
        helm(
            sandbox,
            sandbox_binaries["helm"],
            "install",
            RELEASE,
            str(REPO / "charts/nodeos"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "replicaCount=0",
            "--set",
            f"healthCheckAccess[0].apiGroups[0]={PROBE_GROUP}",
            "--set",
            f"healthCheckAccess[0].resources[0]={PROBE_PLURAL}",
            "--wait",
        )
        try:
            yield custom
        finally:
            helm(sandbox, sandbox_binaries["helm"], "uninstall", RELEASE, "--namespace", NAMESPACE)
            client.CoreV1Api(kube).delete_namespace(NAMESPACE)


def gated_plan(name: str, node: str, probe: str, when: str) -> dict[str, Any]:
    return {
        "apiVersion": "nodeos.dev/v1alpha1",
        "kind": "UpgradePlan",
        "metadata": {"name": name},
        "spec": {
            "target": {"version": NEW},
            "nodeSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                ]
            },
            "healthChecks": [
                {
                    "description": f"probe {probe} is ok",
                    "apiVersion": f"{PROBE_GROUP}/v1",
                    "kind": "Probe",
                    "namespace": "default",
                    "name": probe,
                    "expression": "object.spec.state == 'ok'",
                    "when": when,
                    "timeout": "3s",
                }
            ],
            "failurePolicy": {"rollback": True, "nodeTimeout": "2m"},
        },
    }


def test_before_checks_hold_starts_and_a_failing_after_check_rolls_the_node_back(
    gated: client.CustomObjectsApi,
    sandbox: cluster.Sandbox,
    sandbox_binaries: dict[str, Path],
    kube: client.ApiClient,
    tmp_path: Path,
) -> None:
    custom, core = gated, client.CoreV1Api(kube)
    restricted = token_kubeconfig(
        sandbox, sandbox_binaries["kubectl"], tmp_path / "sa.kc", f"{RELEASE}-nodeos", NAMESPACE
    )
    with simulator_process(
        sandbox,
        tmp_path / "sim",
        "--control-planes",
        "0",
        "--workers",
        "2",
        "--reboot-seconds",
        "1",
    ) as sim:
        op = OperatorProcess(
            sandbox, sim.talosconfig, tmp_path, kubeconfig=restricted, namespace=NAMESPACE
        )
        op.start()

        def plan(name: str) -> dict[str, Any]:
            return dict(
                custom.get_cluster_custom_object(
                    "nodeos.dev", "v1alpha1", "upgradeplans", name
                ).get("status")
                or {}
            )

        def waiting(name: str) -> dict[str, Any]:
            conditions = {c["type"]: c for c in plan(name).get("conditions") or []}
            return conditions.get("Waiting", {})

        try:
            # Before: false holds the start; true lets it go.
            set_probe(custom, "before", "degraded")
            custom.create_cluster_custom_object(
                "nodeos.dev",
                "v1alpha1",
                "upgradeplans",
                gated_plan("held", "worker-1", "before", "Before"),
            )
            wait_for(
                "the plan to wait on its check",
                lambda: waiting("held").get("reason") == "HealthCheckFailing",
                60,
            )
            assert (
                "healthChecks[0] (probe before is ok): false for Probe default/before"
                in (waiting("held")["message"])
            )
            time.sleep(3)  # several reconciles: still nothing starts
            assert not core.read_node("worker-1").spec.unschedulable
            assert plan("held").get("inFlight") in (None, [])
            set_probe(custom, "before", "ok")
            wait_for(
                "the held plan to complete", lambda: plan("held").get("phase") == "Completed", 90
            )
            assert core.read_node("worker-1").status.node_info.os_image == f"Talos ({NEW})"

            # After: false once the node is back, past its 3 s timeout: rolled back.
            set_probe(custom, "after", "degraded")
            boot_before = core.read_node("worker-2").status.node_info.boot_id
            custom.create_cluster_custom_object(
                "nodeos.dev",
                "v1alpha1",
                "upgradeplans",
                gated_plan("rolled", "worker-2", "after", "After"),
            )

            def record() -> dict[str, Any]:
                body = custom.get_cluster_custom_object(
                    "nodeos.dev", "v1alpha1", "upgradeplans", "rolled"
                )
                return plan_records(core, body).get("worker-2", {})

            wait_for(
                "the node to be rolled back", lambda: record().get("phase") == "RolledBack", 120
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{op.logs()}") from None
        finally:
            op.stop()
        rolled = record()
        assert rolled["message"].startswith(
            f"rolled back to {OLD} after: healthChecks[0] (probe after is ok): false"
        ), rolled
        node = core.read_node("worker-2")
        assert node.status.node_info.os_image == f"Talos ({OLD})"
        assert node.status.node_info.boot_id != boot_before
        calls = read_journal(sim.workdir / "calls.jsonl")
        methods = [c.method.rsplit("/", 1)[-1] for c in calls if c.node == "worker-2"]
        assert methods.count("Rollback") == 1, methods
        for name in ("held", "rolled"):  # the operator is stopped: nobody would finalize them
            custom.patch_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "upgradeplans", name, {"metadata": {"finalizers": None}}
            )
            custom.delete_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", name)
        for name in sim.info["nodes"]:
            core.delete_node(name)
