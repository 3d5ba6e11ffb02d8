"""The simulator process drives real Node objects: NotReady while rebooting, new osImage after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes import client

from helpers.e2e import is_ready, simulator_process, wait_for
from nodeos.adapters.osapi.client import TalosClient
from nodeos.adapters.osapi.talosconfig import FileSource
from nodeos.ports.osapi import NodeTarget
from nodeos.sandbox import cluster, kwok
from nodeos.simulator.fleet import read_journal

pytestmark = pytest.mark.sandbox


def test_nodes_follow_the_simulated_os_through_a_reboot(
    sandbox: cluster.Sandbox, kube: client.ApiClient, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    args = (
        "--control-planes",
        "1",
        "--workers",
        "2",
        "--reboot-seconds",
        "3",
        "--fault",
        "worker-2=never-returns",
    )
    with simulator_process(sandbox, tmp_path / "sim", *args) as sim:
        names = ["cp-1", "worker-1", "worker-2"]
        wait_for("simulated nodes Ready", lambda: all(is_ready(core.read_node(n)) for n in names))
        node = core.read_node("worker-1")
        assert node.status.node_info.os_image == "Talos (v1.12.4)"
        assert "node-role.kubernetes.io/control-plane" in core.read_node("cp-1").metadata.labels
        boot_before = node.status.node_info.boot_id

        async def upgrade(name: str) -> None:
            api = TalosClient(FileSource(sim.talosconfig), timeout_s=5)
            try:
                target = NodeTarget(name=name, endpoint=sim.endpoint, route=name)
                await api.install(target, "ghcr.io/siderolabs/installer:v1.13.9")
                await api.reboot(target)
            finally:
                await api.close()

        asyncio.run(upgrade("worker-1"))
        wait_for("worker-1 NotReady", lambda: not is_ready(core.read_node("worker-1")), 15)
        wait_for("worker-1 Ready again", lambda: is_ready(core.read_node("worker-1")), 30)
        node = core.read_node("worker-1")
        assert node.status.node_info.os_image == "Talos (v1.13.9)"
        assert node.status.node_info.boot_id != boot_before

        asyncio.run(upgrade("worker-2"))
        wait_for("worker-2 NotReady", lambda: not is_ready(core.read_node("worker-2")), 15)
        wait_for(
            "kwok to resume heartbeats elsewhere", lambda: is_ready(core.read_node("worker-1"))
        )
        assert not is_ready(core.read_node("worker-2")), "a node that never returns stays NotReady"

    calls = read_journal(tmp_path / "sim" / "calls.jsonl")
    upgrades = [c for c in calls if c.method == "machine.LifecycleService/Upgrade"]
    assert sorted(c.node for c in upgrades) == ["worker-1", "worker-2"]
    for name in names:
        core.delete_node(name)


def test_what_others_write_over_is_posted_again_as_a_kubelet_would(
    sandbox: cluster.Sandbox, kube: client.ApiClient, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    args = ("--control-planes", "0", "--workers", "1", "--kubelet-resync-seconds", "2")
    with simulator_process(sandbox, tmp_path / "sim", *args):
        wait_for("worker-1 Ready", lambda: is_ready(core.read_node("worker-1")))
        # kwok's first status for a Node it takes on has no boot ID: the simulator posts its own
        wait_for("the node's boot ID", lambda: core.read_node("worker-1").status.node_info.boot_id)
        posted = core.read_node("worker-1").status.node_info
        # what kwok did in a 5,000-node run: the Node's status rendered from an older object
        core.patch_node_status(
            "worker-1", {"status": {"nodeInfo": {"bootID": "old", "osImage": "Talos (v1.0.0)"}}}
        )
        pod = core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "resync-probe"},
                "spec": {
                    "nodeName": "worker-1",
                    "tolerations": [kwok.FAKE_NODE_TOLERATION],
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        )
        name = pod.metadata.name

        def pod_ready() -> bool:
            conditions = core.read_namespaced_pod(name, "default").status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        wait_for("the pod to run", pod_ready, 30)
        not_ready = [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"}
        ]
        core.patch_namespaced_pod_status(name, "default", {"status": {"conditions": not_ready}})
        assert not pod_ready()

        def restored() -> bool:
            info = core.read_node("worker-1").status.node_info
            return (info.boot_id, info.os_image) == (posted.boot_id, posted.os_image)

        wait_for("the Node's own boot ID and OS image posted again", restored, 20)
        wait_for("the pod Ready again", pod_ready, 20)
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    core.delete_node("worker-1")
