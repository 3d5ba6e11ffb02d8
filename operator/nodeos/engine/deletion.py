"""What deleting a plan must leave behind: no node cordoned in its name, none of its records.

The plan's engine stops first (its workers finish their current action, so no cordon can land
after the scan); then every Node still carrying the plan's mark, listed fresh from the API
rather than from a cache, is uncordoned, and the plan's record annotation is taken off every
Node that carries it.
"""

from __future__ import annotations

import asyncio
import contextlib

from nodeos.core import records
from nodeos.engine.rollout import PlanRollout
from nodeos.ports.kube import KubeApi, NotFoundError

STOP_WAIT_S = 60.0


class EngineStillRunningError(Exception):
    """The plan's engine has not stopped yet; try the cleanup again shortly."""


async def release_deleted_plan(kube: KubeApi, name: str, rollout: PlanRollout | None) -> list[str]:
    """Waits for the plan's engine to stop, then uncordons what it cordoned; returns those."""
    if rollout is not None:
        try:
            await asyncio.wait_for(rollout.finished.wait(), STOP_WAIT_S)
        except TimeoutError:
            raise EngineStillRunningError(
                f"the engine of UpgradePlan {name} is still stopping"
            ) from None
    released = []
    for node in await kube.cordoned_nodes(name):
        if await kube.uncordon(node, name):
            released.append(node)
    key = records.annotation_key(name)
    for node in await kube.nodes_annotated(key):
        with contextlib.suppress(NotFoundError):
            await kube.annotate_node(node, key, None)
    return released
