"""Node changes, as our own Node watch (``adapters.nodewatch``) reports them, turned into wakes.

A change wakes nothing unless the node's view changed (heartbeat-only updates do not), and then
only the plans and NodeOSConfigs that care about that node (``cares_about``); a plan worker that
waits for this very node to change is told as well. The engines read the nodes from the watch's
``views``: one dict, kept current entry by entry.
"""

from __future__ import annotations

from typing import Any

from nodeos.core.nodes import NodeView
from nodeos.engine.rollout import PlanRollout


def node_changed(memo: Any, name: str, before: NodeView | None, after: NodeView | None) -> None:
    """A node was added, changed or deleted (None: absent): wake whom it concerns."""
    if after == before:
        return
    for rollout in list(getattr(memo, "rollouts", {}).values()):
        if isinstance(rollout, PlanRollout):
            rollout.node_moved(name)  # its worker may wait for this very change
        if rollout.cares_about(before, after):
            rollout.wake.set()
