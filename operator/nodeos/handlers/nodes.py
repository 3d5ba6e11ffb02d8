"""Node handlers: an in-memory index of NodeViews, and a nudge to every plan on node changes."""

from __future__ import annotations

from typing import Any

import kopf

from nodeos.core.nodes import NodeView, view_of


@kopf.index("", "v1", "nodes")
def node_views(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeView]:
    """Every Node as a NodeView, kept current by kopf's watch."""
    return {name: view_of(name, body)}


@kopf.on.event("", "v1", "nodes")
def node_changed(memo: kopf.Memo, **_: Any) -> None:
    """A node changed: let every plan re-plan now rather than at its next timer."""
    for rollout in getattr(memo, "rollouts", {}).values():
        rollout.wake.set()


def snapshot(index: kopf.Index[str, NodeView]) -> dict[str, NodeView]:
    """The index as a plain dict (one view per node name)."""
    return {name: view for name, store in index.items() for view in store}
