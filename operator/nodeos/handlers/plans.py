"""UpgradePlan handlers: one engine per plan while it exists, and a clean exit when deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from nodeos.core.planner import PlanRef, plan_ref
from nodeos.engine.deletion import EngineStillRunningError, release_deleted_plan
from nodeos.engine.report import forget_plan
from nodeos.engine.rollout import PlanRollout

GROUP, VERSION, PLURAL = "nodeos.dev", "v1alpha1", "upgradeplans"


@kopf.index(GROUP, VERSION, PLURAL)
def plan_refs(name: str, body: kopf.Body, **_: Any) -> dict[str, PlanRef]:
    """Every plan's claim on nodes: creation time, phase, selector and nodes in flight."""
    return {name: plan_ref(body)}


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=25.0, cancellation_timeout=30.0)
async def upgradeplan_engine(
    name: str,
    uid: str,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Runs the plan's engine until the plan is deleted or the operator stops.

    It starts once the Node watch has listed every Node: no step plans on part of the fleet.
    """
    plans: kopf.Index[str, PlanRef] = kwargs["plan_refs"]
    await until_nodes_listed(memo, stopped)
    rollout = PlanRollout(
        name,
        uid,
        memo.deps,
        nodes=lambda: memo.node_watch.views,
        body=lambda: body,
        plans=lambda: [ref for store in plans.values() for ref in store],
    )
    memo.rollouts[name] = rollout
    waker = asyncio.create_task(wake_on_stop(stopped, rollout.wake))
    try:
        await rollout.run(lambda: bool(stopped))  # exits by itself: kopf need not cancel it
    finally:
        waker.cancel()
        memo.rollouts.pop(name, None)


async def until_nodes_listed(memo: Any, stopped: kopf.DaemonStopped) -> None:
    """Waits for the Node watch's first list (or for kopf to stop the daemon)."""
    listed = asyncio.ensure_future(memo.node_watch.ready.wait())
    stopping = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait([listed, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        listed.cancel()
        stopping.cancel()


async def wake_on_stop(stopped: kopf.DaemonStopped, wake: asyncio.Event) -> None:
    """Wakes a daemon's loop as soon as kopf asks it to stop (it then exits by itself)."""
    await stopped.wait()
    wake.set()


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def upgradeplan_deleted(name: str, memo: Any, **_: Any) -> None:
    """Stops the plan's engine, then uncordons every node it cordoned (kept until done)."""
    try:
        await release_deleted_plan(memo.deps.kube, name, memo.rollouts.get(name))
    except EngineStillRunningError as error:
        raise kopf.TemporaryError(str(error), delay=5) from None
    forget_plan(name)
