"""Node handlers: an in-memory index of NodeViews, and a nudge to the plans a change concerns.

A Node event wakes nothing unless the node's view changed (heartbeat-only updates do not),
and then only the plans and NodeOSConfigs that care about that node (``cares_about``).
Both handlers are coroutines, so they run on the event loop and never in kopf's thread pool.
The engines read the nodes through ``NodeSnapshots``: one dict, rebuilt only after a view
changed, rather than a copy of the whole index on every step of every node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from nodeos.core.nodes import NodeView, view_of
from nodeos.engine.rollout import PlanRollout


@kopf.index("", "v1", "nodes")
async def node_views(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeView]:
    """Every Node as a NodeView, kept current by kopf's watch."""
    return {name: view_of(name, body)}


@kopf.on.event("", "v1", "nodes")
async def node_changed(
    name: str, body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A node changed: wake the plans it concerns now rather than at their next timer."""
    seen: dict[str, NodeView] = memo.setdefault("node_views_seen", {})
    after = None if type == "DELETED" else view_of(name, body)
    before = seen.pop(name, None) if after is None else seen.get(name)
    if after is not None:
        seen[name] = after
    if after == before:
        return
    memo.node_snapshots.put(name, after)
    for rollout in getattr(memo, "rollouts", {}).values():
        if isinstance(rollout, PlanRollout):
            rollout.node_moved(name)  # its worker may wait for this very change
        if rollout.cares_about(before, after):
            rollout.wake.set()


class NodeSnapshots:
    """The node index as one plain dict, built once and then kept current view by view.

    kopf updates the index before it calls ``node_changed`` for the same event, so a snapshot
    built after ``changed()`` holds the new view; after that each change replaces one entry
    (``put``), so a fleet of 5,000 nodes is not copied on every change. Callers must not modify
    the dict, and must not hold it across an ``await`` while iterating it.
    """

    def __init__(self) -> None:
        self.index: kopf.Index[str, NodeView] | None = None  # kopf hands it to handlers only
        self._version = 0
        self._built_at = -1
        self._views: dict[str, NodeView] = {}

    def changed(self) -> None:
        """Views may have changed: the next call rebuilds the dict from the index."""
        self._version += 1

    def put(self, name: str, view: NodeView | None) -> None:
        """One node's view changed (None: the node is gone)."""
        if self._built_at != self._version:
            return  # not built yet: the next call builds it from the index
        if view is None:
            self._views.pop(name, None)
        else:
            self._views[name] = view

    def __call__(self) -> Mapping[str, NodeView]:
        """Every node's current view."""
        if self._built_at != self._version and self.index is not None:
            self._views = snapshot(self.index)
            self._built_at = self._version
        return self._views


def node_snapshots(memo: kopf.Memo, index: kopf.Index[str, NodeView]) -> NodeSnapshots:
    """The operator's NodeSnapshots (made at startup), reading ``index``."""
    snapshots: NodeSnapshots = memo.node_snapshots
    if snapshots.index is None:
        snapshots.index = index
        snapshots.changed()
    return snapshots


def snapshot(index: kopf.Index[str, NodeView]) -> dict[str, NodeView]:
    """The index as a plain dict (one view per node name)."""
    return {name: view for name, store in index.items() for view in store}
