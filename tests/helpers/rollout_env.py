"""A rollout environment for end-to-end tests: sandbox, simulator process, operator replicas.

``env_factory`` (a fixture, see tests/e2e/conftest.py) starts a simulated fleet and one operator
replica; ``Env`` applies plans and reads what happened; ``monitor`` is the exact invariant
monitor over some nodes; ``assert_clean_finish`` checks the end state of a clean rollout.
"""

from __future__ import annotations

import collections
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from helpers.e2e import (
    OperatorProcess,
    SimulatorProcess,
    deployment,
    operator_process,
    plan_records,
    simulator_process,
    wait_for,
)
from helpers.invariants import InvariantMonitor
from nodeos.sandbox import cluster
from nodeos.simulator.fleet import read_journal

OLD, NEW = "v1.12.4", "v1.13.9"
UPGRADES = ("machine.LifecycleService/Upgrade", "machine.MachineService/Upgrade")
CP = ["cp-1", "cp-2", "cp-3"]
WORKERS = [f"worker-{i}" for i in range(1, 6)]


@dataclass
class Env:
    kube: client.ApiClient
    sim: SimulatorProcess
    op: OperatorProcess
    namespace: str

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.kube)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.kube)

    def apply_plan(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "UpgradePlan",
            "metadata": {"name": name},
            "spec": {
                "target": {"version": NEW},
                "nodeSelector": {"matchLabels": {"type": "kwok"}},
                **spec,
            },
        }
        self.custom.create_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", body)

    def plan(self, name: str) -> dict[str, Any]:
        plan: dict[str, Any] = self.custom.get_cluster_custom_object(
            "nodeos.dev", "v1alpha1", "upgradeplans", name
        )
        return plan

    def phase(self, name: str) -> str:
        return str((self.plan(name).get("status") or {}).get("phase", ""))

    def records(self, name: str) -> dict[str, dict[str, Any]]:
        return plan_records(self.core, self.plan(name))

    def wait_phase(self, name: str, phase: str, timeout_s: float = 120) -> dict[str, Any]:
        try:
            wait_for(f"plan {name} {phase}", lambda: self.phase(name) == phase, timeout_s)
        except AssertionError:
            status = self.plan(name).get("status")
            raise AssertionError(
                f"plan {name} not {phase}: {status}\nworkload pods: {self.pod_states()}\n"
                f"{self.op.logs()}"
            ) from None
        return self.plan(name)

    def pod_states(self) -> list[str]:
        """Each workload pod's node, phase and readiness: what a stuck drain is waiting for.

        With when it was created and became (not) Ready, and who last wrote its status.
        """
        states = []
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            ready = [
                f"{c.status}@{c.last_transition_time:%H:%M:%S}"
                for c in pod.status.conditions or []
                if c.type == "Ready" and c.last_transition_time is not None
            ]
            gone = " terminating" if pod.metadata.deletion_timestamp else ""
            writers = [
                f"{m.manager}@{m.time:%H:%M:%S}"
                for m in pod.metadata.managed_fields or []
                if m.subresource == "status" and m.time is not None
            ]
            states.append(
                f"{pod.metadata.name} on {pod.spec.node_name} {pod.status.phase} "
                f"ready={ready}{gone}; created {pod.metadata.creation_timestamp:%H:%M:%S}; "
                f"status by {writers}"
            )
        return states

    def upgrade_calls(self) -> collections.Counter[str]:
        calls = read_journal(self.sim.workdir / "calls.jsonl")
        return collections.Counter(c.node for c in calls if c.method in UPGRADES and c.code == "OK")

    def node(self, name: str) -> client.V1Node:
        return self.core.read_node(name)

    def events(self, name: str) -> list[str]:
        listed = self.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}"
        )
        return [f"{e.reason}: {e.message}" for e in listed.items]


def env_factory(sandbox: cluster.Sandbox, kube: client.ApiClient, tmp_path: Path) -> Iterator[Any]:
    """Yields ``make(*simulator_args) -> Env``; cleans plans, workloads and nodes after."""
    stack: list[Any] = []

    def make(*sim_args: str) -> Env:
        sim_cm = simulator_process(sandbox, tmp_path / "sim", *sim_args)
        sim = sim_cm.__enter__()
        stack.append(sim_cm)
        namespace = f"w-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
        op_cm = operator_process(sandbox, sim.talosconfig, tmp_path)
        op = op_cm.__enter__()
        stack.append(op_cm)
        return Env(kube, sim, op, namespace)

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
    _cleanup(kube)


def _cleanup(kube: client.ApiClient) -> None:
    """Removes plans, workloads and nodes, so the next test starts from an empty fleet."""
    core = client.CoreV1Api(kube)
    for namespace in core.list_namespace().items:
        if namespace.metadata.name.startswith("w-"):
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace.metadata.name)
    wait_for(
        "workload pods gone",
        lambda: (
            not [
                p
                for p in core.list_pod_for_all_namespaces().items
                if p.metadata.namespace.startswith("w-")
            ]
        ),
    )
    custom = client.CustomObjectsApi(kube)
    for plan in custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans")[
        "items"
    ]:
        name = plan["metadata"]["name"]
        custom.patch_cluster_custom_object(
            "nodeos.dev", "v1alpha1", "upgradeplans", name, {"metadata": {"finalizers": None}}
        )
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", name)
    core = client.CoreV1Api(kube)
    for node in core.list_node(label_selector="type=kwok").items:
        core.delete_node(node.metadata.name)
    wait_for("nodes removed", lambda: not core.list_node(label_selector="type=kwok").items)


def workload(env: Env, replicas: int, min_available: int, selector: dict[str, str]) -> None:
    labels = {"app": "web"}
    client.AppsV1Api(env.kube).create_namespaced_deployment(
        env.namespace, deployment("web", replicas, selector)
    )
    client.PolicyV1Api(env.kube).create_namespaced_pod_disruption_budget(
        env.namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels}},
        },
    )

    def running() -> bool:
        pods = env.core.list_namespaced_pod(env.namespace, label_selector="app=web").items
        return sum(1 for p in pods if p.status.phase == "Running") == replicas

    def budget_current() -> bool:
        # The disruption controller may have counted the pods before they were Ready; a
        # monitor started on that stale status would report a breach nobody caused.
        pdb = client.PolicyV1Api(env.kube).read_namespaced_pod_disruption_budget(
            "web", env.namespace
        )
        status = pdb.status
        return (
            status is not None
            and status.observed_generation == pdb.metadata.generation
            and status.current_healthy >= status.desired_healthy > 0
        )

    wait_for("the workload to run", running)
    wait_for("the PodDisruptionBudget to count the workload healthy", budget_current)


def monitor(
    env: Env, nodes: list[str], max_unavailable: int, *, takeovers: bool = False
) -> InvariantMonitor:
    """The exact monitor over ``nodes``, with the simulator's journal of installs and reboots.

    ``takeovers``: the test kills or replaces the operator, so a node caught in Upgrading may
    get one checking reboot more (docs/design.md, invariant 5).
    """
    return InvariantMonitor(
        env.kube,
        set(nodes),
        max_unavailable,
        reboots_per_node=2 if takeovers else 1,
        journal=env.sim.workdir / "calls.jsonl",
        target=NEW,
        namespaces={env.namespace},
    )


def assert_clean_finish(env: Env, plan: str, nodes: list[str]) -> None:
    for name in nodes:
        node = env.node(name)
        assert node.status.node_info.os_image == f"Talos ({NEW})", name
        assert not node.spec.unschedulable, f"{name} left cordoned"
        assert "nodeos.dev/cordoned-by" not in (node.metadata.annotations or {}), name
    calls = env.upgrade_calls()
    assert {n: calls[n] for n in nodes} == dict.fromkeys(nodes, 1), "exactly one upgrade per node"
    status = env.plan(plan)["status"]
    assert status["inFlight"] == []
    assert status["counts"]["updated"] == len(nodes)
