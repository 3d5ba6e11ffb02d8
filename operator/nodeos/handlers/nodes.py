"""Node handlers: an in-memory index of NodeViews, and a nudge to every plan on node changes."""

from __future__ import annotations

from typing import Any

import kopf

from nodeos.core.nodes import CONFIG_DRIFTED_ANNOTATION, CORDONED_BY_ANNOTATION, NodeView


@kopf.index("", "v1", "nodes")
def node_views(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeView]:
    """Every Node as a NodeView, kept current by kopf's watch."""
    return {name: to_view(name, body)}


@kopf.on.event("", "v1", "nodes")
def node_changed(memo: kopf.Memo, **_: Any) -> None:
    """A node changed: let every plan re-plan now rather than at its next timer."""
    for rollout in getattr(memo, "rollouts", {}).values():
        rollout.wake.set()


def to_view(name: str, body: Any) -> NodeView:
    """The NodeView of a Node object."""
    metadata = body.get("metadata", {})
    status = body.get("status", {}) or {}
    conditions = status.get("conditions") or []
    addresses = status.get("addresses") or []
    internal = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), None)
    node_info = status.get("nodeInfo") or {}
    annotations = metadata.get("annotations") or {}
    drift = annotations.get(CONFIG_DRIFTED_ANNOTATION)
    return NodeView(
        name=name,
        labels=dict(metadata.get("labels") or {}),
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
        unschedulable=bool((body.get("spec") or {}).get("unschedulable")),
        cordoned_by=annotations.get(CORDONED_BY_ANNOTATION),
        os_image=str(node_info.get("osImage", "")),
        address=internal,
        boot_id=str(node_info.get("bootID", "")),
        config_drifted=None if drift is None else drift == "true",
        uid=str(metadata.get("uid", "")),
    )


def snapshot(index: kopf.Index[str, NodeView]) -> dict[str, NodeView]:
    """The index as a plain dict (one view per node name)."""
    return {name: view for name, store in index.items() for view in store}
