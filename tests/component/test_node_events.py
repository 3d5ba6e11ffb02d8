"""Node events wake only what they concern: not on heartbeats, not plans that select elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from nodeos.core.nodes import NodeView
from nodeos.engine.fleet import ConfigController
from nodeos.handlers.nodes import NodeSnapshots, node_changed, node_snapshots


class Listener:
    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.wake = asyncio.Event()
        self.asked: list[tuple[NodeView | None, NodeView | None]] = []

    def cares_about(self, before: NodeView | None, after: NodeView | None) -> bool:
        self.asked.append((before, after))
        return any(v.labels.get("pool") == self.pool for v in (before, after) if v)


def node(pool: str, ready: bool = True, heartbeat: str = "t0") -> dict[str, Any]:
    return {
        "metadata": {"name": "n1", "labels": {"pool": pool}},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastHeartbeatTime": heartbeat,
                }
            ],
            "nodeInfo": {"osImage": "Talos (v1.12.4)", "bootID": "b1"},
        },
    }


def send(memo: kopf.Memo, body: dict[str, Any], kind: str | None = "MODIFIED") -> None:
    asyncio.run(node_changed(name="n1", body=kopf.Body(body), type=kind, memo=memo))


def test_heartbeats_wake_nothing_and_changes_wake_only_whom_they_concern() -> None:
    a, b = Listener("a"), Listener("b")
    memo = kopf.Memo(rollouts={"plan-a": a, "plan-b": b}, node_snapshots=NodeSnapshots())
    send(memo, node("a"), None)  # the initial listing
    assert a.wake.is_set() and not b.wake.is_set()
    a.wake.clear()
    send(memo, node("a", heartbeat="t1"))
    assert not a.wake.is_set() and len(a.asked) == 1, "a heartbeat changes nothing we read"
    send(memo, node("a", ready=False))
    assert a.wake.is_set() and not b.wake.is_set()
    a.wake.clear()
    send(memo, node("b", ready=False))  # relabelled into pool b: both plans hear of it
    assert a.wake.is_set() and b.wake.is_set()
    a.wake.clear(), b.wake.clear()
    send(memo, node("b", ready=False), "DELETED")
    assert b.wake.is_set() and not a.wake.is_set()


def view(pool: str, ready: bool = True, **extra: str) -> NodeView:
    return NodeView(
        name="n1",
        labels={"pool": pool, **extra},
        ready=ready,
        unschedulable=False,
        cordoned_by=None,
        os_image="Talos (v1.12.4)",
    )


def test_a_nodeosconfig_refreshes_only_for_what_its_inventory_reads() -> None:
    config = ConfigController.__new__(ConfigController)  # only its body is needed here
    body = kopf.Body(
        {"metadata": {"name": "c"}, "spec": {"nodeSelector": {"matchLabels": {"pool": "a"}}}}
    )
    config.body = lambda: body
    assert config.cares_about(None, view("a")), "a selected node joined"
    assert config.cares_about(view("a"), view("a", ready=False))
    assert not config.cares_about(view("b"), view("b", ready=False)), "not selected"
    labelled = view("a", **{"nodeos.dev/os-version": "v1.12.4"})
    assert not config.cares_about(view("a"), labelled), "its own label, written by itself"


def test_the_engines_node_dict_is_built_once_and_then_kept_current_view_by_view() -> None:
    memo = kopf.Memo(rollouts={}, node_snapshots=NodeSnapshots())
    index: dict[str, list[NodeView]] = {"n1": [view("a")]}
    nodes = node_snapshots(memo, index)  # type: ignore[arg-type]  # kopf.Index is a Mapping
    first = nodes()
    assert dict(first) == {"n1": view("a")}
    send(memo, node("a", heartbeat="t1"))  # a heartbeat: the same view
    send(memo, node("a", ready=False))
    assert nodes() is first, "no copy of the whole index for a change"
    assert not first["n1"].ready, "the changed view is in it"
    send(memo, node("a", ready=False), "DELETED")
    assert "n1" not in nodes()
