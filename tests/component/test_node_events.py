"""Node changes wake only what they concern: not on heartbeats, not plans that select elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from nodeos.core.nodes import NodeView, view_of
from nodeos.engine.fleet import ConfigController
from nodeos.handlers.nodes import node_changed


class Listener:
    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.wake = asyncio.Event()
        self.asked: list[tuple[NodeView | None, NodeView | None]] = []

    def cares_about(self, before: NodeView | None, after: NodeView | None) -> bool:
        self.asked.append((before, after))
        return any(v.labels.get("pool") == self.pool for v in (before, after) if v)


def node(pool: str, ready: bool = True, heartbeat: str = "t0", version: str = "1") -> NodeView:
    body: dict[str, Any] = {
        "metadata": {"name": "n1", "labels": {"pool": pool}, "resourceVersion": version},
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
    return view_of("n1", body)


def test_heartbeats_wake_nothing_and_changes_wake_only_whom_they_concern() -> None:
    a, b = Listener("a"), Listener("b")
    memo = kopf.Memo(rollouts={"plan-a": a, "plan-b": b})
    node_changed(memo, "n1", None, node("a"))  # the first list
    assert a.wake.is_set() and not b.wake.is_set()
    a.wake.clear()
    heartbeat = node("a", heartbeat="t1", version="2")
    assert heartbeat == node("a"), "a new resourceVersion alone is the same view"
    node_changed(memo, "n1", node("a"), heartbeat)
    assert not a.wake.is_set() and len(a.asked) == 1, "a heartbeat changes nothing we read"
    node_changed(memo, "n1", node("a"), node("a", ready=False))
    assert a.wake.is_set() and not b.wake.is_set()
    a.wake.clear()
    node_changed(memo, "n1", node("a", ready=False), node("b", ready=False))  # relabelled
    assert a.wake.is_set() and b.wake.is_set(), "both plans hear of it"
    a.wake.clear(), b.wake.clear()
    node_changed(memo, "n1", node("b", ready=False), None)  # deleted
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
