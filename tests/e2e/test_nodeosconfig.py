"""NodeOSConfig against the sandbox and simulator: inventory, drift, config apply, rotation."""

from __future__ import annotations

import base64
import collections
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from helpers.e2e import OperatorProcess, SimulatorProcess, simulator_process, wait_for
from helpers.invariants import InvariantMonitor
from nodeos.sandbox import cluster
from nodeos.simulator.fleet import read_journal

pytestmark = pytest.mark.sandbox

OLD, NEW = "v1.12.4", "v1.13.9"
SECRET_NS = "nodeos-system"
LIVE_PATCH = "machine:\n  sysctls:\n    net.core.somaxconn: '65535'\n"
REBOOT_PATCH = "machine:\n  env:\n    HTTP_PROXY: http://proxy.example.com:3128\n"


class Fleet:
    def __init__(self, kube: client.ApiClient, sim: SimulatorProcess, op: OperatorProcess) -> None:
        self.kube, self.sim, self.op = kube, sim, op
        self.custom = client.CustomObjectsApi(kube)
        self.core = client.CoreV1Api(kube)
        self.secret = f"tc-{uuid.uuid4().hex[:6]}"

    @property
    def nodes(self) -> list[str]:
        return list(self.sim.info["nodes"])

    def store_talosconfig(self, path: Path) -> None:
        body = {
            "metadata": {"name": self.secret},
            "data": {"config": base64.b64encode(path.read_bytes()).decode()},
        }
        try:
            self.core.create_namespaced_secret(SECRET_NS, body)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.replace_namespaced_secret(self.secret, SECRET_NS, body)

    def apply_config(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "NodeOSConfig",
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"matchLabels": {"type": "kwok"}},
                "osApi": {
                    "talosconfigSecret": {"name": self.secret, "namespace": SECRET_NS},
                    "timeout": "3s",
                },
                "inventory": {"refreshInterval": "5s", "concurrency": 8},
                **spec,
            },
        }
        try:
            self.custom.create_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "nodeosconfigs", body
            )
        except ApiException as error:
            if error.status != 409:
                raise
            self.custom.patch_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "nodeosconfigs", name, {"spec": body["spec"]}
            )

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_cluster_custom_object("nodeos.dev", "v1alpha1", "nodeosconfigs", name)
        return dict(obj.get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == kind), {})

    def wait_ready(self, name: str, timeout_s: float = 120) -> None:
        try:
            wait_for(
                f"{name} Ready",
                lambda: self.condition(name, "Ready").get("status") == "True",
                timeout_s,
            )
        except AssertionError:
            raise AssertionError(f"{self.status(name)}\n{self.op.logs()}") from None

    def diagnose(self, name: str) -> str:
        plans = self.custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans")
        summary = [(p["metadata"]["name"], p.get("spec"), p.get("status")) for p in plans["items"]]
        return f"config status: {self.status(name)}\nplans: {summary}\n{self.op.logs()}"

    def calls(self, method: str) -> collections.Counter[str]:
        journal = read_journal(self.sim.workdir / "calls.jsonl")
        return collections.Counter(c.node for c in journal if c.method == method and c.code == "OK")


@pytest.fixture
def fleet_factory(
    sandbox: cluster.Sandbox, kube: client.ApiClient, crds_installed: None, tmp_path: Path
) -> Iterator[Any]:
    stack: list[Any] = []

    def make(*sim_args: str) -> Fleet:
        sim_cm = simulator_process(sandbox, tmp_path / "sim", *sim_args)
        sim = sim_cm.__enter__()
        stack.append(sim_cm)
        op = OperatorProcess(sandbox, sim.workdir / "talosconfig-spare", tmp_path)
        op.start()
        stack.append(op)
        fleet = Fleet(kube, sim, op)
        fleet.store_talosconfig(sim.talosconfig)
        return fleet

    yield make
    custom = client.CustomObjectsApi(kube)
    for obj in custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "nodeosconfigs")[
        "items"
    ]:
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "nodeosconfigs", obj["metadata"]["name"]
            )
    wait_for(
        "configs and plans gone",
        lambda: (
            not custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "nodeosconfigs")[
                "items"
            ]
            and not custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans")[
                "items"
            ]
        ),
        60,
    )
    for item in reversed(stack):
        if isinstance(item, OperatorProcess):
            item.stop()
        else:
            item.__exit__(None, None, None)
    core = client.CoreV1Api(kube)
    for node in core.list_node(label_selector="type=kwok").items:
        core.delete_node(node.metadata.name)
    wait_for("nodes removed", lambda: not core.list_node(label_selector="type=kwok").items)


def test_inventory_of_a_20_node_fleet_then_a_version_change_rolls_it(
    fleet_factory: Any, figures: list[str]
) -> None:
    fleet: Fleet = fleet_factory(
        "--control-planes", "3", "--workers", "17", "--reboot-seconds", "2"
    )
    fleet.apply_config("fleet")
    wait_for("inventory", lambda: fleet.status("fleet").get("counts", {}).get("nodes") == 20, 60)
    status = fleet.status("fleet")
    assert status["counts"] == {"nodes": 20, "upToDate": 20, "drifted": 0, "unreachable": 0}
    assert status["versions"] == [{"version": OLD, "count": 20}]
    labelled = fleet.core.list_node(label_selector=f"nodeos.dev/os-version={OLD}").items
    assert len(labelled) == 20
    metrics = fleet.op.metrics()
    assert f'nodeos_fleet_nodes{{config="fleet",version="{OLD}"}} 20.0' in metrics
    assert 'nodeos_fleet_unreachable_nodes{config="fleet"} 0.0' in metrics

    with InvariantMonitor(
        fleet.kube, set(fleet.nodes), 3, journal=fleet.sim.workdir / "calls.jsonl", target=NEW
    ) as watch:
        started = time.monotonic()
        fleet.apply_config(
            "fleet", os={"version": NEW}, rollout={"strategy": {"maxUnavailable": 3}}
        )
        wait_for(
            "the drift to be seen",
            lambda: fleet.condition("fleet", "Drifted").get("status") == "True",
            60,
        )
        fleet.wait_ready("fleet", 240)
        elapsed = time.monotonic() - started
    assert watch.violations == [], watch.violations[:5]
    assert fleet.status("fleet")["versions"] == [{"version": NEW, "count": 20}]
    assert len(fleet.core.list_node(label_selector=f"nodeos.dev/os-version={NEW}").items) == 20
    upgrades = fleet.calls("machine.LifecycleService/Upgrade")
    assert sorted(upgrades.values()) == [1] * 20
    assert not [n for n in fleet.nodes if fleet.core.read_node(n).spec.unschedulable]
    wait_for(
        "the generated plan removed",
        lambda: (
            not fleet.custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans")[
                "items"
            ]
        ),
        30,
    )
    figures.append(
        f"20-node rollout via NodeOSConfig (3 CP + 17 workers, maxUnavailable 3, "
        f"2 s reboots): {elapsed:.1f}s including drift detection"
    )


def test_no_reboot_patch_is_applied_without_cordoning_then_a_reboot_patch_is_rolled(
    fleet_factory: Any,
) -> None:
    fleet: Fleet = fleet_factory("--control-planes", "0", "--workers", "3", "--reboot-seconds", "1")
    with InvariantMonitor(fleet.kube, set(fleet.nodes), 0) as watch:
        fleet.apply_config("live", config={"mode": "NoReboot", "patches": [LIVE_PATCH]})
        wait_for(
            "the patch applied",
            lambda: sum(fleet.calls("machine.MachineService/ApplyConfiguration").values()) >= 6,
            60,
        )
        fleet.wait_ready("live", 60)
    assert watch.violations == [], "nobody was cordoned or rebooted"
    assert watch.samples > 5
    assert not fleet.calls("machine.MachineService/Reboot")
    for node in fleet.nodes:
        annotations = fleet.core.read_node(node).metadata.annotations
        assert annotations["nodeos.dev/config-drifted"] == "false"

    with InvariantMonitor(
        fleet.kube, set(fleet.nodes), 1, journal=fleet.sim.workdir / "calls.jsonl"
    ) as watch:
        fleet.apply_config("live", config={"mode": "Auto", "patches": [LIVE_PATCH, REBOOT_PATCH]})
        wait_for("a rollout plan", lambda: fleet.status("live").get("upgradePlan"), 60)
        try:
            wait_for("reboots", lambda: len(fleet.calls("machine.MachineService/Reboot")) == 3, 120)
        except AssertionError:
            raise AssertionError(fleet.diagnose("live")) from None
        fleet.wait_ready("live", 120)
    assert watch.violations == []
    assert watch.peak_unavailable == 1, "the reboot-requiring change was rolled one at a time"
    assert not fleet.calls("machine.LifecycleService/Upgrade"), "config only: no OS install"
    for node in fleet.nodes:
        assert fleet.core.read_node(node).metadata.annotations["nodeos.dev/config-drifted"] == (
            "false"
        )


def test_a_rejected_patch_is_reported_with_the_nodes_message(fleet_factory: Any) -> None:
    fleet: Fleet = fleet_factory(
        "--control-planes",
        "0",
        "--workers",
        "2",
        "--reboot-seconds",
        "1",
        "--fault",
        "worker-2=reject-config=unknown field machine.bogus",
    )
    fleet.apply_config("rejected", config={"mode": "NoReboot", "patches": [LIVE_PATCH]})
    wait_for(
        "Degraded", lambda: fleet.condition("rejected", "Degraded").get("status") == "True", 60
    )
    message = fleet.condition("rejected", "Degraded")["message"]
    assert "worker-2 rejected the configuration" in message
    assert "unknown field machine.bogus" in message
    assert fleet.condition("rejected", "Ready")["status"] == "False"


def test_a_rotated_secret_is_picked_up_without_a_restart(fleet_factory: Any) -> None:
    fleet: Fleet = fleet_factory(
        "--control-planes",
        "0",
        "--workers",
        "2",
        "--reboot-seconds",
        "1",
        "--client-cert-validity",
        "8",
    )
    fleet.apply_config("rotation")
    fleet.wait_ready("rotation", 30)
    wait_for(
        "the certificate to expire and be reported",
        lambda: "expired" in fleet.status("rotation").get("message", ""),
        60,
    )
    fleet.store_talosconfig(fleet.sim.workdir / "talosconfig-spare")
    fleet.wait_ready("rotation", 90)
    assert fleet.op.starts == 1, "the same operator process"


def test_a_missing_secret_is_a_condition_naming_it_until_it_is_created(
    fleet_factory: Any,
) -> None:
    fleet: Fleet = fleet_factory("--control-planes", "0", "--workers", "1", "--reboot-seconds", "1")
    fleet.secret = f"not-yet-{uuid.uuid4().hex[:6]}"
    fleet.apply_config("no-secret")
    wait_for(
        "CredentialsUnusable",
        lambda: fleet.condition("no-secret", "Ready").get("reason") == "CredentialsUnusable",
        60,
    )
    ready = fleet.condition("no-secret", "Ready")
    assert ready["status"] == "False"
    assert f"secret {SECRET_NS}/{fleet.secret} does not exist" in ready["message"]
    fleet.store_talosconfig(fleet.sim.talosconfig)
    fleet.wait_ready("no-secret", 90)
    assert "Traceback" not in fleet.op.logs()

    # A valid talosconfig Secret outside the namespaces nodeos may read is refused unread.
    elsewhere = f"tc-elsewhere-{uuid.uuid4().hex[:6]}"
    data = {"config": base64.b64encode(fleet.sim.talosconfig.read_bytes()).decode()}
    fleet.core.create_namespaced_secret("default", {"metadata": {"name": elsewhere}, "data": data})
    try:
        fleet.apply_config(
            "elsewhere",
            osApi={"talosconfigSecret": {"name": elsewhere, "namespace": "default"}},
        )
        wait_for(
            "the reference refused",
            lambda: fleet.condition("elsewhere", "Ready").get("reason") == "CredentialsUnusable",
            60,
        )
        message = fleet.condition("elsewhere", "Ready")["message"]
        assert f"secret default/{elsewhere} is outside the namespaces" in message, message
        assert f"({SECRET_NS})" in message
    finally:
        fleet.core.delete_namespaced_secret(elsewhere, "default")


def test_a_deleted_config_takes_its_labels_and_series_with_it(fleet_factory: Any) -> None:
    fleet: Fleet = fleet_factory("--control-planes", "0", "--workers", "2", "--reboot-seconds", "1")
    fleet.apply_config("gone-soon")
    fleet.wait_ready("gone-soon", 60)
    labelled = lambda: [  # noqa: E731
        n.metadata.name for n in fleet.core.list_node(label_selector="nodeos.dev/os-version").items
    ]
    wait_for("labels", lambda: len(labelled()) == 2, 30)
    assert 'nodeos_fleet_nodes{config="gone-soon",version="v1.12.4"} 2.0' in fleet.op.metrics()
    fleet.custom.delete_cluster_custom_object(
        "nodeos.dev", "v1alpha1", "nodeosconfigs", "gone-soon"
    )
    wait_for("labels gone", lambda: labelled() == [], 30)
    wait_for("series gone", lambda: 'config="gone-soon"' not in fleet.op.metrics(), 30)
    for node in fleet.nodes:
        annotations = fleet.core.read_node(node).metadata.annotations or {}
        assert "nodeos.dev/config-hash" not in annotations
