"""What the engine does when people edit a plan: a spec change, a retry, a canary approval.

A new generation or the ``nodeos.dev/retry`` annotation resets the records the change concerns
(``core.reset``); the canary's hold is decided by ``core.canary`` and recorded in status. The
annotations are consumed (removed) once acted on, so each is acted on once.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from nodeos.core import canary, planner
from nodeos.core.reset import after_change
from nodeos.engine.report import condition, has_condition
from nodeos.engine.snapshot import Snapshot
from nodeos.engine.status import Draft, StatusStore
from nodeos.models.upgradeplan import NodeProgress
from nodeos.ports.kube import KubeApi

RETRY_ANNOTATION = "nodeos.dev/retry"


async def handle_spec_change(store: StatusStore, kube: KubeApi, plan: str, snap: Snapshot) -> bool:
    """Resets records after a spec change or a retry; True when it did."""
    status = store.summary
    retry = RETRY_ANNOTATION in snap.annotations
    changed = (
        status.observed_generation is not None and snap.generation > status.observed_generation
    )
    if not (retry or changed):
        return False

    def reset(draft: Draft) -> None:
        records, draft.in_flight = after_change(
            draft.nodes, draft.in_flight, snap.spec.target.version
        )
        draft.replace_nodes(records)
        draft.summary.pop("completed_at", None)

    await store.commit(reset, nodes=None)  # it reads every record, staged changes first
    if retry:
        await kube.remove_plan_annotation(plan, RETRY_ANNOTATION)
    return True


async def canary_hold(
    store: StatusStore,
    kube: KubeApi,
    plan: str,
    snap: Snapshot,
    canary_nodes: Sequence[str],
    progress: Mapping[str, NodeProgress],
    now: datetime.datetime,
) -> planner.Waiting | None:
    """Why the rest waits behind the canary batch (the rule: ``core.canary.gate``)."""
    verdict = canary.gate(
        snap.spec.strategy.canary,
        canary_nodes,
        progress,
        recorded=has_condition(store.summary.conditions, "CanaryComplete"),
        approved=canary.APPROVE_ANNOTATION in snap.annotations,
        now=now,
    )
    if verdict.complete is not None:
        reason, message = verdict.complete
        await store.commit(lambda d: condition(d, "CanaryComplete", True, reason, message, now))
    if canary.APPROVE_ANNOTATION in snap.annotations and verdict.hold is None:
        await kube.remove_plan_annotation(plan, canary.APPROVE_ANNOTATION)
    return verdict.hold
