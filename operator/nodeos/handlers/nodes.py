"""Node handlers: an in-memory index of NodeViews, and a nudge to the plans a change concerns.

A Node event wakes nothing unless the node's view changed (heartbeat-only updates do not),
and then only the plans and NodeOSConfigs that care about that node (``cares_about``).
"""

from __future__ import annotations

from typing import Any

import kopf

from nodeos.core.nodes import NodeView, view_of


@kopf.index("", "v1", "nodes")
def node_views(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeView]:
    """Every Node as a NodeView, kept current by kopf's watch."""
    return {name: view_of(name, body)}


@kopf.on.event("", "v1", "nodes")
def node_changed(name: str, body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A node changed: wake the plans it concerns now rather than at their next timer."""
    seen: dict[str, NodeView] = memo.setdefault("node_views_seen", {})
    after = None if type == "DELETED" else view_of(name, body)
    before = seen.pop(name, None) if after is None else seen.get(name)
    if after is not None:
        seen[name] = after
    if after == before:
        return
    for rollout in getattr(memo, "rollouts", {}).values():
        if rollout.cares_about(before, after):
            rollout.wake.set()


def snapshot(index: kopf.Index[str, NodeView]) -> dict[str, NodeView]:
    """The index as a plain dict (one view per node name)."""
    return {name: view for name, store in index.items() for view in store}
