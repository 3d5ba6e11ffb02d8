"""PlanRollout with in-memory fakes for the Kubernetes and OS API ports.

Faked here: the cluster (nodes, the plan object with resourceVersion checks, events) and the
nodes' OS API (an install takes effect at the next reboot, which happens at once). The engine,
planner and state machine are the real ones. The tests tell the engine of every node as the
Node watch would (``node_moved``), whether or not it changed.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from helpers.fakes import NEW, FakeKube, FakeNode, FakeOsApi
from nodeos.core.nodes import CORDONED_BY_ANNOTATION, NodeView
from nodeos.engine import metrics
from nodeos.engine.rollout import EngineDeps, PlanRollout
from nodeos.engine.routing import Routing
from nodeos.ports.osapi import ErrorKind, InstallOutcome, NodeTarget, OsApiError
from nodeos.ports.prometheus import Alert, PrometheusError


def views(nodes: dict[str, FakeNode]) -> dict[str, NodeView]:
    return {
        n.name: NodeView(
            name=n.name,
            labels={"pool": "a"},
            ready=n.ready,
            unschedulable=n.unschedulable,
            cordoned_by=n.annotations.get(CORDONED_BY_ANNOTATION),
            os_image=f"Talos ({n.version})",
            boot_id=n.boot_id,
        )
        for n in nodes.values()
    }


def tick(rollout: PlanRollout, nodes: dict[str, FakeNode]) -> None:
    """What the watches would do meanwhile: wake the plan, and tell it of every node."""
    rollout.wake.set()
    for name in nodes:
        rollout.node_moved(name)


async def roll(kube: FakeKube, osapi: FakeOsApi, nodes: dict[str, FakeNode]) -> PlanRollout:
    deps = EngineDeps(
        kube=kube,
        osapi=osapi,
        routing=Routing("Node"),  # type: ignore[arg-type]
        poll_s=0.01,
    )
    rollout = PlanRollout("p", "uid", deps, nodes=lambda: views(nodes), body=lambda: kube.plan)
    stop = asyncio.Event()
    task = asyncio.create_task(rollout.run(stop.is_set))
    deadline = asyncio.get_running_loop().time() + 10
    while (kube.plan.get("status") or {}).get("phase") != "Completed":
        assert asyncio.get_running_loop().time() < deadline, kube.plan.get("status")
        tick(rollout, nodes)
        await asyncio.sleep(0.02)
    stop.set()
    rollout.wake.set()
    await asyncio.wait_for(task, 5)
    return rollout


def plan(max_unavailable: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "generation": 1},
        "spec": {
            "target": {"version": NEW},
            "nodeSelector": {"matchLabels": {"pool": "a"}},
            "strategy": {"maxUnavailable": max_unavailable},
        },
    }


class LedgerLog(FakeKube):
    """Remembers the in-flight ledger of every status write."""

    ledgers: list[list[str]]

    async def patch_plan_status(self, name: str, status: dict[str, Any], rv: str) -> str:
        version = await super().patch_plan_status(name, status, rv)
        self.ledgers.append(list(status.get("inFlight") or []))
        return version


async def test_a_slot_is_handed_from_one_node_to_the_next_in_one_status_write() -> None:
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(3)}
    kube, osapi = LedgerLog(nodes, plan(1)), FakeOsApi(nodes)
    kube.ledgers = []
    await roll(kube, osapi, nodes)
    assert osapi.installs == dict.fromkeys(nodes, 1)
    changes = [
        ledger for i, ledger in enumerate(kube.ledgers) if kube.ledgers[i - 1 : i] != [ledger]
    ]
    # the finished node leaves the ledger in the write that brings the next one in
    assert changes == [["w-0"], ["w-1"], ["w-2"], []], kube.ledgers


class SlowStatus(LedgerLog):
    """Status writes take a while; what happened meanwhile is logged beside them."""

    log: list[tuple[str, str]]

    async def patch_plan_status(self, name: str, status: dict[str, Any], rv: str) -> str:
        await asyncio.sleep(0.05)
        version = await super().patch_plan_status(name, status, rv)
        self.log.extend(("claimed", n) for n in status.get("inFlight") or [])
        return version


class ReadLog(FakeOsApi):
    log: list[tuple[str, str]]

    async def boot_id(self, node: NodeTarget, *, rebooting: bool = False) -> str:
        self.log.append(("read", node.name))
        return await super().boot_id(node, rebooting=rebooting)


async def test_the_next_node_is_read_while_its_slot_is_being_claimed() -> None:
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(2)}
    kube, osapi = SlowStatus(nodes, plan(1)), ReadLog(nodes)
    kube.ledgers, kube.log = [], []
    osapi.log = kube.log
    await roll(kube, osapi, nodes)
    assert osapi.installs == dict.fromkeys(nodes, 1)
    for name in nodes:
        assert kube.log.index(("read", name)) < kube.log.index(("claimed", name)), kube.log


async def test_a_slot_given_back_by_both_the_step_and_its_worker_is_freed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the step's write takes longer than the worker waits for it: both give the slot back
    monkeypatch.setattr("nodeos.engine.rollout._HANDOVER_S", 0.01)
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(3)}
    kube, osapi = SlowStatus(nodes, plan(1)), FakeOsApi(nodes)
    kube.ledgers, kube.log = [], []
    before = _observed(metrics.TRANSITION_SECONDS)
    rollout = await roll(kube, osapi, nodes)
    assert osapi.installs == dict.fromkeys(nodes, 1)
    assert _observed(metrics.TRANSITION_SECONDS) - before == 2  # w-0 -> w-1, w-1 -> w-2
    assert len(rollout._freed_at) <= 1  # the last node's slot, which no node took


def _observed(histogram: Any) -> float:
    return float(
        next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count"))
    )


class FactoryNodes(FakeOsApi):
    """Nodes installed from a factory image; reading the config fails once per node."""

    images: list[str]
    unreadable: set[str]

    async def read_file(self, node: NodeTarget, path: str) -> bytes:
        if node.name in self.unreadable:
            self.unreadable.discard(node.name)
            raise OsApiError(node.name, ErrorKind.TRANSIENT, "UNAVAILABLE", "connection refused")
        return f"machine:\n  install:\n    image: {FACTORY}:v1.0.0\n".encode()

    async def install(self, node: NodeTarget, image: str, api: str = "Auto") -> InstallOutcome:
        self.images.append(image)
        return await super().install(node, image, api)


FACTORY = "factory.talos.dev/installer/" + "3765679" * 9 + "1"  # a schematic ID: 64 hex digits


async def test_an_unreadable_config_delays_the_install_and_never_drops_the_nodes_image() -> None:
    # the default installer would drop the node's schematic (its system extensions)
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(2)}
    kube, osapi = FakeKube(nodes, plan(2)), FactoryNodes(nodes)
    osapi.images, osapi.unreadable = [], set(nodes)
    await roll(kube, osapi, nodes)
    assert osapi.images == [f"{FACTORY}:{NEW}"] * 2
    assert osapi.installs == dict.fromkeys(nodes, 1)


async def test_engine_rolls_every_node_once_within_the_budget() -> None:
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(5)}
    kube, osapi = FakeKube(nodes, plan(2)), FakeOsApi(nodes)
    await roll(kube, osapi, nodes)
    assert all(n.version == NEW and not n.unschedulable for n in nodes.values())
    assert osapi.installs == dict.fromkeys(nodes, 1)
    assert kube.max_cordoned <= 2
    assert kube.plan["status"]["counts"]["updated"] == 5
    assert "UpgradePlan/p: NodeDone" in kube.events
    assert "Node/w-0: NodeCordoning" in kube.events and "Node/w-0: NodeDone" in kube.events
    steps = ("NodeDraining", "NodeRebooting", "NodeVerifying")
    assert not any(s in event for s in steps for event in kube.events), "only milestones posted"


async def test_the_cordon_and_the_uncordon_carry_the_records_they_lead_to() -> None:
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(3)}
    kube, osapi = FakeKube(nodes, plan(3)), FakeOsApi(nodes)
    written: list[tuple[str, str]] = []
    annotate = kube.annotate_node

    async def counting(node: str, key: str, value: str | None) -> None:
        written.append((node, json.loads(value)["phase"] if value else "removed"))
        await annotate(node, key, value)

    kube.annotate_node = counting  # type: ignore[method-assign]
    await roll(kube, osapi, nodes)
    assert {n: r["phase"] for n, r in kube.records().items()} == dict.fromkeys(nodes, "Done")
    for name in nodes:
        alone = [phase for node, phase in written if node == name]
        # Upgrading before the install call; the reboot request, with what the install did,
        # before the wait for the node: each on its own, before the next action
        assert alone == ["Upgrading", "Rebooting"], (name, alone)


class SlowReboots(FakeOsApi):
    """Nodes that are away for a while after the reboot call: their OS API refuses, their
    kubelet reports NotReady, then they come back with a new boot, Ready."""

    def __init__(self, nodes: dict[str, FakeNode], away_s: float = 0.5) -> None:
        super().__init__(nodes)
        self.away_s = away_s
        self.boot_id_reads: Counter[str] = Counter()
        self.reads_while_down: Counter[str] = Counter()
        self.away: set[str] = set()

    async def boot_id(self, node: NodeTarget, *, rebooting: bool = False) -> str:
        self.boot_id_reads[node.name] += 1
        if node.name in self.away:
            self.reads_while_down[node.name] += 1
            raise OsApiError(node.name, ErrorKind.TRANSIENT, "UNAVAILABLE", "connection refused")
        return await super().boot_id(node)

    async def reboot(self, node: NodeTarget, mode: str = "Default") -> None:
        self.away.add(node.name)
        self.nodes[node.name].ready = False
        asyncio.get_running_loop().call_later(self.away_s, self._back, node.name)

    def _back(self, name: str) -> None:
        self.boot(name)
        self.away.discard(name)
        self.nodes[name].ready = True


async def test_a_rebooting_node_is_asked_for_its_boot_id_once_its_node_is_ready_again() -> None:
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(2)}
    kube, osapi = FakeKube(nodes, plan(2)), SlowReboots(nodes)
    await roll(kube, osapi, nodes)
    assert all(n.version == NEW and not n.unschedulable for n in nodes.values())
    # the cordon, the reboot's check, once back (the verification takes that one): none while
    # it was away (its Node NotReady; back within the first wait, 2 s)
    assert osapi.reads_while_down == Counter()
    assert osapi.boot_id_reads == dict.fromkeys(nodes, 3)


async def test_a_worker_that_fails_unexpectedly_is_resumed(caplog: Any) -> None:
    nodes = {"w-0": FakeNode("w-0"), "w-1": FakeNode("w-1")}
    kube, osapi = FakeKube(nodes, plan(1)), FakeOsApi(nodes)
    kube.fail_pods_on_once = True
    await roll(kube, osapi, nodes)
    assert all(n.version == NEW and not n.unschedulable for n in nodes.values())
    assert osapi.installs == {"w-0": 1, "w-1": 1}
    assert "the worker for w-0 failed; resuming it shortly" in caplog.text


async def run_until(
    kube: FakeKube,
    nodes: dict[str, FakeNode],
    done: Any,
    osapi: FakeOsApi | None = None,
    prometheus: Any = None,
) -> None:
    """Runs the engine until ``done(status)`` holds, then stops it."""
    deps = EngineDeps(
        kube=kube,
        osapi=osapi or FakeOsApi(nodes),
        routing=Routing("Node"),  # type: ignore[arg-type]
        poll_s=0.01,
        prometheus=prometheus,
    )
    rollout = PlanRollout("p", "uid", deps, nodes=lambda: views(nodes), body=lambda: kube.plan)
    stop = asyncio.Event()
    task = asyncio.create_task(rollout.run(stop.is_set))
    deadline = asyncio.get_running_loop().time() + 10
    while not done(kube.plan.get("status") or {}):
        assert asyncio.get_running_loop().time() < deadline, kube.plan.get("status")
        tick(rollout, nodes)
        await asyncio.sleep(0.02)
    for _ in range(5):  # a few more reconciles: nothing more is reported
        tick(rollout, nodes)
        await asyncio.sleep(0.02)
    stop.set()
    rollout.wake.set()
    await asyncio.wait_for(task, 5)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


async def test_a_plan_that_selects_no_node_is_degraded_and_warns_once() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    body = plan()
    body["spec"]["nodeSelector"] = {"matchLabels": {"pool": "typo"}}
    kube = FakeKube(nodes, body)
    await run_until(kube, nodes, lambda s: conditions(s).get("Waiting", {}).get("status") == "True")
    status = kube.plan["status"]
    assert status["phase"] == "Waiting", status
    assert conditions(status)["Waiting"]["reason"] == "NoNodesSelected"
    degraded = conditions(status)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "NoNodesSelected")
    assert "matches no node" in degraded["message"]
    assert kube.events.count("UpgradePlan/p: NoNodesSelected") == 1


async def test_a_window_that_can_never_open_is_a_degraded_plan_naming_the_field() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    body = plan()
    body["spec"]["maintenanceWindows"] = [{"schedule": "0 0 31 2 *", "duration": "1h"}]
    kube = FakeKube(nodes, body)
    await run_until(kube, nodes, lambda s: "Degraded" in conditions(s))
    degraded = conditions(kube.plan["status"])["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert degraded["message"].startswith("spec.maintenanceWindows.0.schedule: ")
    assert "never fires" in degraded["message"]
    assert nodes["w-0"].version != NEW and not nodes["w-0"].unschedulable


CEPH = {
    "apiVersion": "ceph.rook.io/v1",
    "kind": "CephCluster",
    "metadata": {"name": "rook-ceph", "namespace": "rook-ceph"},
    "status": {"ceph": {"health": "HEALTH_WARN"}},
}


def with_check(when: str, timeout: str = "5m", rollback: bool = False) -> dict[str, Any]:
    body = plan(1)
    body["spec"]["healthChecks"] = [
        {
            "description": "Ceph is healthy",
            "apiVersion": "ceph.rook.io/v1",
            "kind": "CephCluster",
            "namespace": "rook-ceph",
            "name": "rook-ceph",
            "expression": "object.status.ceph.health == 'HEALTH_OK'",
            "when": when,
            "timeout": timeout,
        }
    ]
    body["spec"]["failurePolicy"] = {"rollback": rollback, "nodeTimeout": "1m"}
    return body


async def test_a_false_before_check_holds_every_start_until_it_holds() -> None:
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(2)}
    kube = FakeKube(nodes, with_check("Before"))
    kube.objects["CephCluster"] = [CEPH]
    await run_until(
        kube,
        nodes,
        lambda s: conditions(s).get("Waiting", {}).get("reason") == "HealthCheckFailing",
    )
    message = conditions(kube.plan["status"])["Waiting"]["message"]
    assert message.startswith("healthChecks[0] (Ceph is healthy): false for CephCluster rook-ceph/")
    assert not any(n.unschedulable for n in nodes.values()), "nothing starts while it is false"
    kube.objects["CephCluster"] = [{**CEPH, "status": {"ceph": {"health": "HEALTH_OK"}}}]
    await run_until(kube, nodes, lambda s: s.get("phase") == "Completed")
    assert all(n.version == NEW for n in nodes.values())


async def test_a_check_that_cannot_be_read_holds_the_plan_naming_the_cause() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    kube = FakeKube(nodes, with_check("Both"))
    kube.unreadable.add("CephCluster")
    await run_until(
        kube, nodes, lambda s: conditions(s).get("Waiting", {}).get("reason") == "HealthCheckError"
    )
    message = conditions(kube.plan["status"])["Waiting"]["message"]
    assert "cannot read CephCluster" in message and "healthCheckAccess" in message
    assert nodes["w-0"].version != NEW


async def test_a_before_check_matching_no_object_holds_rather_than_passing() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    kube = FakeKube(nodes, with_check("Before"))
    await run_until(
        kube, nodes, lambda s: conditions(s).get("Waiting", {}).get("reason") == "HealthCheckError"
    )
    assert "no CephCluster object matched in namespace rook-ceph" in str(kube.plan["status"])


async def test_a_failing_after_check_rolls_the_node_back_and_verifies_it() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    kube = FakeKube(nodes, with_check("After", timeout="0s", rollback=True))
    kube.objects["CephCluster"] = [CEPH]
    osapi = FakeOsApi(nodes)
    await run_until(
        kube,
        nodes,
        lambda s: any(r.get("phase") == "RolledBack" for r in kube.records().values()),
        osapi=osapi,
    )
    record = kube.records()["w-0"]
    assert record["message"].startswith(
        "rolled back to v1.12.4 after: healthChecks[0] (Ceph is healthy): false for CephCluster "
        "rook-ceph/rook-ceph"
    ), record
    assert nodes["w-0"].version != NEW and osapi.rollbacks["w-0"] == 1
    assert osapi.installs["w-0"] == 1, "a failing After check is not installed again"


async def test_an_after_check_that_holds_lets_the_node_finish() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    kube = FakeKube(nodes, with_check("After", rollback=True))
    kube.objects["CephCluster"] = [{**CEPH, "status": {"ceph": {"health": "HEALTH_OK"}}}]
    await run_until(kube, nodes, lambda s: s.get("phase") == "Completed")
    assert nodes["w-0"].version == NEW


async def test_an_expression_that_does_not_compile_is_an_invalid_spec_at_once() -> None:
    nodes = {"w-0": FakeNode("w-0")}
    body = with_check("Before")
    body["spec"]["healthChecks"][0]["expression"] = "object.status.ceph.health =="
    kube = FakeKube(nodes, body)
    await run_until(kube, nodes, lambda s: "Degraded" in conditions(s))
    degraded = conditions(kube.plan["status"])["Degraded"]
    assert degraded["reason"] == "InvalidSpec"
    assert degraded["message"].startswith("spec.healthChecks.0.expression: ")
    assert "does not compile" in degraded["message"]


class FakePrometheus:
    def __init__(self) -> None:
        self.firing: list[str] = []
        self.down = False

    async def query(self, url: str, promql: str) -> list[dict[str, Any]]:
        return []

    async def alerts(self, url: str) -> list[Alert]:
        if self.down:
            raise PrometheusError(f"no answer from {url}: connection refused")
        return [Alert(name=n, state="firing", labels={"alertname": n}) for n in self.firing]


async def test_firing_alerts_hold_starts_and_an_unreachable_prometheus_never_means_healthy() -> (
    None
):
    nodes = {f"w-{i}": FakeNode(f"w-{i}") for i in range(2)}
    body = plan(1)
    body["spec"]["prometheus"] = {
        "url": "http://prometheus:9090",
        "alerts": {"ignore": "Watchdog"},
    }
    kube, gate = FakeKube(nodes, body), FakePrometheus()
    gate.firing = ["Watchdog", "CephHealthError"]

    def reason(status: dict[str, Any]) -> str:
        return str(conditions(status).get("Waiting", {}).get("reason"))

    await run_until(kube, nodes, lambda s: reason(s) == "AlertsFiring", prometheus=gate)
    assert (
        "1 alert(s) firing: CephHealthError"
        in conditions(kube.plan["status"])["Waiting"]["message"]
    )
    gate.firing, gate.down = [], True
    await run_until(kube, nodes, lambda s: reason(s) == "PrometheusUnavailable", prometheus=gate)
    assert not any(n.unschedulable for n in nodes.values())
    gate.down = False
    await run_until(kube, nodes, lambda s: s.get("phase") == "Completed", prometheus=gate)
