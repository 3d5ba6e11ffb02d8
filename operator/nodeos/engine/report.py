"""What a plan tells people: its status summary and conditions, node Events, and metrics.

``summarise`` edits a status draft from the planner's decision (computed from that very draft);
``announce`` records a node's phase change as Events on the plan and the Node; the rest export
gauges. None of it decides anything about the rollout.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping, Sequence

from nodeos.core import planner
from nodeos.core.summary import plan_phase, set_condition
from nodeos.engine import metrics
from nodeos.engine.status import Draft
from nodeos.models.common import Condition
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec, UpgradePlanStatus
from nodeos.ports.kube import KubeApi, KubeApiError

log = logging.getLogger(__name__)
# Waits that will not clear on their own: the plan is Degraded and says so in a Warning Event.
NEEDS_A_PERSON = frozenset({"NoNodesSelected", "InvalidWindow"})
PLAN_PHASES = ("Pending", "Queued", "Progressing", "Paused", "Waiting", "Completed", "Failed")


def summarise(
    draft: Draft,
    spec: UpgradePlanSpec,
    generation: int,
    decision: planner.Decision,
    now: datetime.datetime,
    durations: Sequence[float],
) -> None:
    """Writes phase, message, counts, preview, ETA and the standard conditions into ``draft``."""
    for name in decision.up_to_date:
        draft.nodes[name] = NodeProgress(
            name=name, phase="Done", since=now, reason="AlreadyUpToDate", target=spec.target.version
        )
    counts = dict(decision.counts)
    failed = counts["failed"]
    phase, message = plan_phase(decision, draft.in_flight, spec.target.version)
    summary = draft.summary
    summary.update(
        phase=phase,
        message=message[:1024],
        observed_generation=generation,
        observed_target=spec.target.version,
        progress=f"{counts['updated']}/{counts['total']}",
        counts={
            "total": counts["total"],
            "updated": counts["updated"],
            "in_progress": counts["inProgress"],
            "failed": counts["failed"],
            "pending": counts["pending"],
        },
        preview={
            "batches": [list(b) for b in decision.batches],
            "total_batches": decision.total_batches,
        },
        next_window=decision.next_window,
        eta=_eta(decision, now, durations) if phase == "Progressing" else None,
    )
    if phase == "Completed":
        summary.setdefault("completed_at", now)
    else:
        summary.pop("completed_at", None)
    waiting = decision.waiting
    condition(draft, "Progressing", phase == "Progressing", phase, message, now)
    condition(draft, "Complete", phase == "Completed", phase, message, now)
    stuck = waiting is not None and waiting.reason in NEEDS_A_PERSON
    if failed:
        degraded = ("NodesFailed", f"{failed} node(s) failed")
    elif stuck and waiting is not None:
        degraded = (waiting.reason, waiting.message)
    else:
        degraded = ("NoFailures", "no node failed")
    condition(draft, "Degraded", bool(failed) or stuck, *degraded, now)
    condition(
        draft,
        "Waiting",
        waiting is not None,
        waiting.reason if waiting else "NotWaiting",
        waiting.message if waiting else "",
        now,
    )
    condition(draft, "ReconcileError", False, "Reconciled", "", now)


def condition(
    draft: Draft, kind: str, status: bool, reason: str, message: str, now: datetime.datetime
) -> None:
    """Sets one condition in ``draft`` (lastTransitionTime moves only when the status flips)."""
    conditions = [Condition.model_validate(c) for c in draft.summary.get("conditions", [])]
    updated = set_condition(
        conditions, kind, status, reason, message, now, draft.summary.get("observed_generation")
    )
    draft.summary["conditions"] = [c.model_dump() for c in updated]


def has_condition(conditions: Sequence[Condition], kind: str) -> bool:
    """Whether condition ``kind`` is True."""
    return any(c.type == kind and c.status == "True" for c in conditions)


def _eta(
    decision: planner.Decision, now: datetime.datetime, durations: Sequence[float]
) -> datetime.datetime | None:
    if not durations:
        return None
    average = sum(durations) / len(durations)
    eta = now + datetime.timedelta(seconds=average * (decision.total_batches + 1))
    return eta.replace(second=0, microsecond=0)


# The reboot is left out: the kubelet posts its own Event (Rebooted) when it comes back with a
# new boot ID, on the same Node.
MILESTONES = frozenset({"Cordoning", "Done"})


async def announce(
    kube: KubeApi,
    plan: str,
    uid: str,
    node_uid: str,
    before: NodeProgress,
    after: NodeProgress,
    on_plan: Callable[[bool], bool] = lambda warning: True,
) -> None:
    """Logs a node's phase change, and posts milestones and warnings as Events.

    Each goes on the Node, and on the plan if ``on_plan(warning)`` (the plan's Event budget,
    ``core.events``). Milestones (``MILESTONES``: started, done) are what a person
    reading ``kubectl describe node`` needs; the steps between them are in the log and the
    node's record, and posting them too would double a rollout's API requests. A lost Event is
    logged.
    """
    text = f"{after.name}: {before.phase} -> {after.phase}"
    if after.message:
        text += f" ({after.message})"
    warning = after.phase in ("Failed", "RollingBack", "RolledBack") or (
        after.phase == "Pending" and after.reason is not None
    )
    reason = (f"Node{after.phase}" if not after.reason else f"Node{after.phase}{after.reason}")[
        :128
    ]
    level = logging.WARNING if warning else logging.INFO
    fields = {"plan": plan, "node": after.name, "phase": after.phase, "reason": after.reason}
    log.log(level, "%s -> %s%s", before.phase, after.phase, _detail(after), extra=fields)
    if not warning and after.phase not in MILESTONES:
        return
    try:
        if on_plan(warning):
            await kube.event("UpgradePlan", plan, uid, "nodeos.dev/v1alpha1", reason, text, warning)
        await kube.event("Node", after.name, node_uid, "v1", reason, text, warning)
    except KubeApiError as error:
        log.warning("%s: could not record an Event for %s: %s", plan, after.name, error)


def _detail(record: NodeProgress) -> str:
    return f": {record.message}" if record.message else ""


def log_plan_change(plan: str, before: str | None, status: UpgradePlanStatus) -> None:
    """One line when a plan's phase changes: started, waiting (and why), finished, failed."""
    if status.phase == before:
        return
    level = {"Failed": logging.ERROR, "Waiting": logging.WARNING}.get(status.phase, logging.INFO)
    reason = next(
        (c.reason for c in status.conditions if c.type == "Waiting" and c.status == "True"), None
    )
    fields = {"plan": plan, "phase": status.phase, "reason": reason}
    log.log(level, "plan %s -> %s: %s", before or "new", status.phase, status.message, extra=fields)


async def warn_when_stuck(
    kube: KubeApi, plan: str, uid: str, before: str | None, status: UpgradePlanStatus
) -> str | None:
    """A Warning Event when the plan starts waiting for a person; returns the wait's reason."""
    waiting = _waiting(status)
    reason = waiting.reason if waiting is not None else None
    if waiting is not None and reason != before and reason in NEEDS_A_PERSON:
        try:
            await kube.event(
                "UpgradePlan",
                plan,
                uid,
                "nodeos.dev/v1alpha1",
                waiting.reason,
                waiting.message,
                True,
            )
        except KubeApiError as error:
            log.warning("%s: could not record an Event: %s", plan, error)
    return reason


def waiting_reason(status: UpgradePlanStatus) -> str | None:
    """Why the plan waits, as its Waiting condition says (None when it does not)."""
    waiting = _waiting(status)
    return waiting.reason if waiting is not None else None


def _waiting(status: UpgradePlanStatus) -> Condition | None:
    return next((c for c in status.conditions if c.type == "Waiting" and c.status == "True"), None)


def export_metrics(
    plan: str, status: UpgradePlanStatus, records: Mapping[str, NodeProgress]
) -> None:
    """The plan's phase, and its selected nodes per phase (they sum to the selection)."""
    owner = f"plan/{plan}"
    for phase in PLAN_PHASES:
        gauge = metrics.series(metrics.PLAN_PHASE, owner, plan, phase)
        gauge.set(1 if status.phase == phase else 0)
    counts = status.counts
    by_phase = {"Pending": counts.pending, "Done": counts.updated, "Failed": counts.failed}
    for name in status.in_flight:
        if (record := records.get(name)) is not None:
            by_phase[record.phase] = by_phase.get(record.phase, 0) + 1
    for phase, count in by_phase.items():
        metrics.series(metrics.NODES_BY_PHASE, owner, plan, phase).set(count)
    metrics.keep_only(metrics.NODES_BY_PHASE, owner, {(plan, phase) for phase in by_phase})


def forget_plan(plan: str) -> None:
    """Removes every metric series of a deleted plan."""
    metrics.forget(f"plan/{plan}")
