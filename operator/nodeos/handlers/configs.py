"""NodeOSConfig handlers: one controller per config; deleting it removes its rollout plan."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from nodeos.core.nodes import matches
from nodeos.engine.fleet import ConfigController, forget_inventory
from nodeos.handlers.plans import until_nodes_listed, wake_on_stop

GROUP, VERSION, PLURAL = "nodeos.dev", "v1alpha1", "nodeosconfigs"


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=25.0, cancellation_timeout=30.0)
async def nodeosconfig_controller(
    name: str, uid: str, body: kopf.Body, stopped: kopf.DaemonStopped, memo: Any, **kwargs: Any
) -> None:
    """Keeps the config's inventory current and its nodes in the desired state."""
    await until_nodes_listed(memo, stopped)
    controller = ConfigController(
        name, uid, memo.deps, nodes=lambda: memo.node_watch.views, body=lambda: body
    )
    memo.rollouts[f"nodeosconfig/{name}"] = controller
    waker = asyncio.create_task(wake_on_stop(stopped, controller.wake))
    try:
        await controller.run(lambda: bool(stopped))
    finally:
        waker.cancel()
        memo.rollouts.pop(f"nodeosconfig/{name}", None)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def nodeosconfig_deleted(name: str, spec: kopf.Spec, memo: Any, **kwargs: Any) -> None:
    """Cleans up after a config: its plan, its node labels and its metric series.

    The plan's own deletion handler uncordons what it cordoned.
    """
    await memo.deps.kube.delete_plan(f"{name}-rollout")
    await memo.node_watch.ready.wait()
    selector = dict(spec.get("nodeSelector") or {})
    nodes = [n for n, view in memo.node_watch.views.items() if matches(selector, view.labels)]
    await forget_inventory(memo.deps.kube, name, nodes)
