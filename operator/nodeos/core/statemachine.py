"""One node's way through a plan: the next action for its phase, and the phase after a result.

Pure functions over ``NodeProgress`` with ``now`` passed in. The worker in the shell asks
``next_action``, performs it, and feeds the ``Result`` to ``after``, which returns the new
progress to persist. Phases::

    Pending -> Cordoning -> Draining -> Upgrading -> Rebooting -> Verifying -> Uncordoning
            -> Soaking -> Done            (side exits: Failed, RolledBack)

Upgrading is persisted *before* the install call; a worker that finds a node in Upgrading after
a restart does not install again (invariant: at most one upgrade per node per plan) but checks
whether the node already rebooted, and otherwise treats the node as failed (retry per policy).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

from nodeos.models.common import parse_duration
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import NodeProgress

ActionKind = Literal[
    "Cordon",
    "Drain",
    "Install",
    "AwaitReboot",
    "Verify",
    "Uncordon",
    "Soak",
    "Rollback",
    "CleanupFailed",
    "None",
]


@dataclass(frozen=True)
class Action:
    """What the worker must do next for this node."""

    kind: ActionKind
    force: bool = False  # Drain: delete what eviction could not move
    resumed: bool = False  # Install/AwaitReboot: picked up after an operator restart


@dataclass(frozen=True)
class Result:
    """What happened when the worker performed an action."""

    ok: bool = True
    transient: bool = False  # try the same action again later
    reason: str = ""
    message: str = ""
    boot_id: str | None = None  # Cordon: boot ID before the upgrade; AwaitReboot: the new one
    version: str | None = None  # Verify/Install: what the OS API reports
    cordoned_by_us: bool | None = None
    remaining_pods: int = 0
    binds_pending: bool = False  # Drain: found the node empty while pods awaited binding
    reboots_itself: bool = False
    unhealthy: bool = False  # Verify: back on the target version but not healthy


@dataclass(frozen=True)
class Context:
    """Everything besides the node's progress that decides its next phase."""

    target: str | None  # None: keep the version the node had (a config-only rollout)
    policy: RolloutPolicy
    is_resume: bool = False


def start(name: str, previous: NodeProgress | None, now: datetime.datetime) -> NodeProgress:
    """The record written (with the slot) before anything touches the node."""
    attempt = previous.attempt if previous is not None else None
    return NodeProgress(
        name=name,
        phase="Cordoning",
        since=now,
        attempt=attempt,
        cordoned_by_us=previous.cordoned_by_us if previous else None,
        boot_id=None,
    )


def next_action(progress: NodeProgress, ctx: Context, now: datetime.datetime) -> Action:
    """The action for the node's current phase."""
    match progress.phase:
        case "Cordoning":
            return Action("Cordon")
        case "Draining":
            expired = progress.deadline is not None and now >= progress.deadline
            force = expired and ctx.policy.drain.on_timeout == "ForceDelete"
            return Action("Drain", force=force)
        case "Upgrading":
            return Action("Install", resumed=ctx.is_resume)
        case "Rebooting":
            return Action("AwaitReboot", resumed=ctx.is_resume)
        case "Verifying":
            return Action("Verify")
        case "Uncordoning":
            return Action("Uncordon")
        case "Soaking":
            return Action("Soak")
        case "Failed" if progress.reason == "RollingBack":
            return Action("Rollback")
        case _:
            return Action("None")


def after(
    progress: NodeProgress, action: Action, result: Result, ctx: Context, now: datetime.datetime
) -> NodeProgress:
    """The node's progress once ``action`` produced ``result``."""
    if result.transient:
        return _check_deadline(progress, ctx, now, result)
    if not result.ok:
        return fail(progress, result.reason, result.message, ctx, now)
    policy = ctx.policy
    match action.kind:
        case "Cordon":
            node_deadline = now + parse_duration(policy.failure_policy.node_timeout)
            if not policy.drain.enabled:
                return _enter(
                    progress,
                    "Upgrading",
                    now,
                    deadline=node_deadline,
                    boot_id=result.boot_id,
                    from_version=result.version,
                    cordoned_by_us=result.cordoned_by_us,
                )
            drain_deadline = min(now + parse_duration(policy.drain.timeout), node_deadline)
            return _enter(
                progress,
                "Draining",
                now,
                deadline=drain_deadline,
                boot_id=result.boot_id,
                from_version=result.version,
                cordoned_by_us=result.cordoned_by_us,
            )
        case "Drain":
            expired = progress.deadline is not None and now >= progress.deadline
            if (
                result.remaining_pods == 0
                and result.binds_pending
                and not action.force
                and _settling(progress, ctx, now)
            ):
                return replace(
                    progress,
                    message="nothing left to evict, but the scheduler has pods to bind; "
                    "checking again once any placed here before the cordon are bound",
                )
            if result.remaining_pods == 0 or action.force:
                return _enter(progress, "Upgrading", now, deadline=_node_deadline(progress, ctx))
            if not expired:
                return replace(
                    progress,
                    message=f"{result.remaining_pods} pod(s) left to evict: {result.message}",
                )
            if policy.drain.on_timeout == "SkipRemaining":
                return _enter(
                    progress,
                    "Upgrading",
                    now,
                    deadline=_node_deadline(progress, ctx),
                    message=f"drain timed out; rebooting with {result.remaining_pods} "
                    "pod(s) still on the node (onTimeout: SkipRemaining)",
                )
            return fail(
                progress,
                "DrainTimeout",
                f"drain timed out with {result.remaining_pods} pod(s) left: "
                f"{result.message}; not rebooting",
                ctx,
                now,
            )
        case "Install":
            if action.resumed and result.boot_id is None:
                return fail(
                    progress,
                    "InstallInterrupted",
                    "the operator restarted during the install call and the node has not "
                    "rebooted; not installing twice",
                    ctx,
                    now,
                )
            return _enter(
                progress,
                "Rebooting",
                now,
                deadline=_node_deadline(progress, ctx),
                message="installed; rebooting"
                if not result.reboots_itself
                else "installed; the node reboots itself",
            )
        case "AwaitReboot":
            if result.boot_id is None or result.boot_id == progress.boot_id:
                return _check_deadline(progress, ctx, now, result)
            return _enter(progress, "Verifying", now, deadline=_node_deadline(progress, ctx))
        case "Verify":
            expected = ctx.target or progress.from_version
            if result.version != expected:
                return fail(
                    progress,
                    "BootFallback",
                    f"came back on {result.version}, not {expected} (boot fallback or "
                    "the install did not take)",
                    ctx,
                    now,
                    allow_rollback=False,
                )
            if result.unhealthy:
                return _check_deadline(progress, ctx, now, result, unhealthy=True)
            return _enter(progress, "Uncordoning", now, deadline=None)
        case "Uncordon":
            soak = parse_duration(policy.strategy.soak_between_nodes)
            if soak.total_seconds() > 0:
                return _enter(progress, "Soaking", now, deadline=now + soak)
            return _done(progress, now)
        case "Soak":
            return _done(progress, now)
        case "Rollback":
            return replace(
                progress,
                phase="RolledBack",
                since=now,
                reason="RolledBack",
                message=progress.message,
                deadline=None,
            )
        case _:
            return progress


def _settling(progress: NodeProgress, ctx: Context, now: datetime.datetime) -> bool:
    """Whether an empty drain round came too soon after the cordon to be trusted.

    The scheduler binds asynchronously: while it has pods to bind, one it placed on the node
    just before the cordon can be bound just after a round found the node empty, and would then
    be rebooted unevicted.
    """
    settle = parse_duration(ctx.policy.drain.settle)
    return progress.since is not None and now < progress.since + settle


def fail(
    progress: NodeProgress,
    reason: str,
    message: str,
    ctx: Context,
    now: datetime.datetime,
    *,
    allow_rollback: bool = True,
) -> NodeProgress:
    """A failed attempt: back to Pending with a retry time, or Failed when out of retries."""
    policy = ctx.policy.failure_policy
    attempt = progress.attempt or 0
    if attempt < policy.retries and reason not in ("BootFallback", "NotRebooted"):
        backoff = parse_duration(policy.retry_backoff) * (2**attempt)
        backoff = min(backoff, datetime.timedelta(hours=1))
        return replace(
            progress,
            phase="Pending",
            since=now,
            attempt=attempt + 1,
            retry_at=now + backoff,
            reason=reason,
            message=message,
            deadline=None,
        )
    if policy.rollback and allow_rollback and reason == "Unhealthy":
        return replace(
            progress,
            phase="Failed",
            since=now,
            reason="RollingBack",
            message=message,
            deadline=None,
        )
    return replace(
        progress,
        phase="Failed",
        since=now,
        reason=reason,
        message=message,
        deadline=None,
        retry_at=None,
    )


def _check_deadline(
    progress: NodeProgress,
    ctx: Context,
    now: datetime.datetime,
    result: Result,
    *,
    unhealthy: bool = False,
) -> NodeProgress:
    if progress.deadline is None or now < progress.deadline:
        return progress
    match progress.phase:
        case "Rebooting":
            if result.ok and not result.transient and result.boot_id == progress.boot_id:
                return fail(
                    progress,
                    "NotRebooted",
                    "installed but the node never rebooted (boot ID unchanged at the deadline)",
                    ctx,
                    now,
                )
            return fail(
                progress,
                "NeverReturned",
                "the node did not come back from its reboot "
                f"before the deadline ({result.message or 'unreachable'})",
                ctx,
                now,
            )
        case "Verifying" if unhealthy:
            return fail(
                progress, "Unhealthy", result.message or "not Ready after the upgrade", ctx, now
            )
        case _:
            return fail(
                progress,
                "Timeout",
                f"{progress.phase} did not finish before the node "
                f"timeout ({result.message or 'no progress'})",
                ctx,
                now,
            )


def _node_deadline(progress: NodeProgress, ctx: Context) -> datetime.datetime | None:
    started = progress.started_at if progress.started_at else progress.since
    if started is None:
        return None
    return started + parse_duration(ctx.policy.failure_policy.node_timeout)


def _enter(
    progress: NodeProgress,
    phase: str,
    now: datetime.datetime,
    *,
    deadline: datetime.datetime | None,
    message: str | None = None,
    **fields: object,
) -> NodeProgress:
    changes: dict[str, object] = {
        "phase": phase,
        "since": now,
        "deadline": deadline,
        "message": message,
        "reason": None,
    }
    if progress.started_at is None:
        changes["started_at"] = progress.since or now
    changes.update({k: v for k, v in fields.items() if v is not None})
    return replace(progress, **changes)


def replace(progress: NodeProgress, **changes: object) -> NodeProgress:
    """A copy of ``progress`` with ``changes`` (a frozen pydantic model)."""
    return progress.model_copy(update=changes)


def _done(progress: NodeProgress, now: datetime.datetime) -> NodeProgress:
    """Done keeps only what is worth keeping, so 5,000 records stay small."""
    return NodeProgress(
        name=progress.name,
        phase="Done",
        since=now,
        from_version=progress.from_version,
        attempt=progress.attempt,
    )
