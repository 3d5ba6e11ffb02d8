"""One node's way through a plan: the next action for its phase, and the phase after a result.

Pure functions over ``NodeProgress`` with ``now`` passed in. The worker in the shell asks
``next_action``, performs it, and feeds the ``Result`` to ``after``, which returns the new
progress to persist. Phases::

    Pending -> Cordoning -> Draining -> Upgrading -> Rebooting -> Verifying -> Uncordoning
            -> Soaking -> Done            (side exits: Failed, RollingBack -> RolledBack)

Rules that keep a node safe whatever fails or restarts:

- Every phase has a deadline (the drain's own, else the node timeout from the attempt's start);
  a transient error past it fails the attempt with a reason.
- Install and Reboot are separate persisted steps, so a failed Reboot never installs again.
  A Reboot is sent only while the node still reports the boot ID recorded before the upgrade;
  once it reports another, the node has rebooted and is verified, never rebooted again.
- An install whose outcome is unknown (its reply was lost, or the operator restarted while the
  node was in Upgrading) is not sent again in the same attempt: the node is rebooted and its
  version checked. If the install did not take, a new attempt starts that does not count
  against ``retries`` (at most ``MAX_INTERRUPTIONS`` times).
- A record that leaves its slot (retry pending, failed, rolled back) first gives back our
  cordon, unless the policy keeps failed nodes cordoned; so no cordon of ours exists outside
  the in-flight ledger except on a node reported failed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

from nodeos.core import failures
from nodeos.models.common import parse_duration
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import NodeProgress

FINAL = frozenset({"Done", "Failed", "RolledBack"})
MAX_INTERRUPTIONS = failures.MAX_INTERRUPTIONS

ActionKind = Literal[
    "Cordon",
    "Drain",
    "Install",
    "Reboot",
    "AwaitReboot",
    "Verify",
    "Uncordon",
    "Soak",
    "Rollback",
    "None",
]


@dataclass(frozen=True)
class Action:
    """What the worker must do next for this node."""

    kind: ActionKind
    force: bool = False  # Drain: delete what eviction could not move


@dataclass(frozen=True)
class Result:
    """What happened when the worker performed an action."""

    ok: bool = True
    transient: bool = False  # try the same action again later
    reason: str = ""
    message: str = ""
    boot_id: str | None = None  # Cordon/Rollback: boot ID before; Reboot/AwaitReboot: now
    version: str | None = None  # Cordon/Verify/AwaitReboot: what the OS API reports
    cordoned_by_us: bool | None = None
    remaining_pods: int = 0
    binds_pending: bool = False  # Drain: found the node empty while pods awaited binding
    listed_at: datetime.datetime | None = None  # Drain: when the round began listing the pods
    reboot_requested: bool = False  # Install (reboots by itself), Reboot, Rollback
    unconfirmed: bool = False  # Install: the call's outcome is unknown
    unhealthy: bool = False  # Verify: back on the target version but not healthy
    # Verify: an After health check does not hold; how long it may fail once the node is back
    check_timeout: datetime.timedelta | None = None
    requeue: str = ""  # Cordon: not cordoned, the plan's rules no longer allow it (why)
    redrain: bool = False  # Install/Reboot: uncordoned by someone; drain again before going on
    # Verify: what is missing is the Node's own report (Ready, the new boot ID); checking again
    # before the Node object changes would find the same
    awaits_node: bool = False


@dataclass(frozen=True)
class Context:
    """Everything besides the node's progress that decides its next phase."""

    policy: RolloutPolicy


def start(
    name: str,
    previous: NodeProgress | None,
    target: str | None,
    policy: RolloutPolicy,
    now: datetime.datetime,
    node_uid: str | None = None,
) -> NodeProgress:
    """The record written (with the slot) before anything touches the node."""
    return NodeProgress(
        name=name,
        phase="Cordoning",
        since=now,
        started_at=now,
        deadline=now + parse_duration(policy.failure_policy.node_timeout),
        attempt=previous.attempt if previous is not None else None,
        interrupted=previous.interrupted if previous is not None else None,
        target=target,
        node_uid=node_uid or None,
    )


def resume(progress: NodeProgress, now: datetime.datetime) -> NodeProgress:
    """The record as a restarted worker must take it up.

    A node found in Upgrading may or may not have received its install: rather than install
    again, the worker reboots it and lets the version decide (see the module's rules).
    """
    if progress.phase != "Upgrading":
        return progress
    return replace(
        progress,
        phase="Rebooting",
        since=now,
        unconfirmed=True,
        reboot_requested_at=None,
        message="the operator restarted during the install; rebooting and checking the version "
        "instead of installing again",
    )


_STILL_CORDONED = "; our cordon is still on, lifting it failed: "

# Steps whose only effect is on the record, and that a resumed worker takes again by itself:
# back from the reboot (the boot ID proves it again), verified (checked again)
_REPEATABLE_STEPS = frozenset({("Rebooting", "Verifying"), ("Verifying", "Uncordoning")})


def deferrable(before: NodeProgress, after: NodeProgress) -> bool:
    """Whether a restart that loses this change is harmless, so it need not be stored first.

    True for a new message alone and for steps the resumed worker repeats by itself (a check
    that passes again). Never for anything that records what was done to the node (cordon,
    reboot asked, slot released): those are stored before the next action. The install is the
    exception that proves the rule: Upgrading is stored before the install call, and a resumed
    worker takes any Upgrading record as possibly installed (``resume``), so the record that
    says it was installed rides on the next write, the reboot's.
    """
    if before.phase == after.phase:
        return replace(after, message=before.message) == before
    if (before.phase, after.phase) == ("Upgrading", "Rebooting"):
        return after.reboot_requested_at is None  # an install that rebooted by itself: stored
    return (before.phase, after.phase) in _REPEATABLE_STEPS


def requeue(progress: NodeProgress, why: str, now: datetime.datetime) -> NodeProgress:
    """Gives the slot back before touching the node; not a failed attempt."""
    return replace(
        progress,
        phase="Pending",
        since=now,
        deadline=None,
        reason="Requeued",
        message=f"not cordoned: {why}",
    )


def keeps_cordon(progress: NodeProgress, policy: RolloutPolicy) -> bool:
    """Whether a finished or failed record may leave its slot with our cordon still on."""
    return progress.phase in ("Failed", "RolledBack") and not (
        policy.failure_policy.uncordon_on_failure
    )


def next_action(progress: NodeProgress, ctx: Context, now: datetime.datetime) -> Action:
    """The action for the node's current phase (``None``: the slot can be released)."""
    match progress.phase:
        case "Cordoning":
            return Action("Cordon")
        case "Draining":
            expired = progress.deadline is not None and now >= progress.deadline
            force = expired and ctx.policy.drain.on_timeout == "ForceDelete"
            return Action("Drain", force=force)
        case "Upgrading":
            return Action("Install")
        case "Rebooting":
            return Action("Reboot" if progress.reboot_requested_at is None else "AwaitReboot")
        case "RollingBack":
            return Action("Rollback" if progress.reboot_requested_at is None else "AwaitReboot")
        case "Verifying":
            return Action("Verify")
        case "Uncordoning":
            return Action("Uncordon")
        case "Soaking":
            return Action("Soak")
        case "Pending" | "Failed" | "RolledBack" if (
            progress.cordoned_by_us is not False and not keeps_cordon(progress, ctx.policy)
        ):
            # Unknown (None) counts as ours: a cordon whose reply was lost may be on the node.
            # The uncordon is guarded by our mark, so it never lifts someone else's.
            return Action("Uncordon")
        case _:
            return Action("None")


def after(
    progress: NodeProgress, action: Action, result: Result, ctx: Context, now: datetime.datetime
) -> NodeProgress:
    """The node's progress once ``action`` produced ``result``."""
    if action.kind == "Uncordon" and progress.phase != "Uncordoning":
        if result.transient:
            return progress  # a retry or failure waits for its cordon to come off
        if not result.ok:  # refused (e.g. RBAC): the cordon is still on, and so is the slot
            said = (progress.message or "").split(_STILL_CORDONED)[0]
            return replace(progress, message=f"{said}{_STILL_CORDONED}{result.message}")
        return replace(progress, cordoned_by_us=False)
    if result.cordoned_by_us is not None and action.kind != "Cordon":
        # cordoned again after someone else lifted the cordon mid-upgrade: ours to lift now
        progress = replace(progress, cordoned_by_us=result.cordoned_by_us)
    if result.redrain:
        progress = replace(progress, redrain=True)
    elif progress.redrain and action.kind in ("Install", "Reboot") and not result.transient:
        progress = replace(progress, redrain=None)  # drained again and went on
    if result.requeue:
        return requeue(progress, result.requeue, now)
    if result.transient:
        if (
            action.kind == "Drain"
            and not action.force
            and _drain_outlives_error(progress, ctx, now)
        ):
            return progress  # the next round applies onTimeout, not this error
        return _check_deadline(progress, ctx, now, result)
    if not result.ok:
        return fail(progress, result.reason, result.message, ctx, now)
    policy = ctx.policy
    match action.kind:
        case "Cordon":
            deadline = progress.deadline
            if policy.drain.enabled:
                drain_deadline = now + parse_duration(policy.drain.timeout)
                deadline = min(drain_deadline, deadline) if deadline else drain_deadline
            return _enter(
                progress,
                "Draining" if policy.drain.enabled else "Upgrading",
                now,
                deadline=deadline,
                boot_id=result.boot_id,
                from_version=result.version,
                cordoned_by_us=result.cordoned_by_us,
            )
        case "Drain":
            return _after_drain(progress, action, result, ctx, now)
        case "Install":
            return _enter(
                progress,
                "Rebooting",
                now,
                deadline=_node_deadline(progress, ctx),
                reboot_requested_at=now if result.reboot_requested else None,
                unconfirmed=True if result.unconfirmed else None,
                message=result.message or None,
            )
        case "Reboot" | "AwaitReboot" | "Rollback":
            return _after_reboot(progress, action, result, ctx, now)
        case "Verify":
            expected = progress.target or progress.from_version
            if result.version != expected:
                if progress.unconfirmed:
                    return fail(
                        progress,
                        "InstallNotConfirmed",
                        f"came back on {result.version}, not {expected}: the install whose "
                        "reply was lost did not take; installing again in a new attempt",
                        ctx,
                        now,
                        interrupted=True,
                    )
                return fail(
                    progress,
                    "BootFallback",
                    f"came back on {result.version}, not {expected} (boot fallback or "
                    "the install did not take)",
                    ctx,
                    now,
                )
            if result.unhealthy:
                # The boot ID now proves the next reboot: the rollback's, if it comes to that.
                progress = replace(progress, boot_id=result.boot_id or progress.boot_id)
                checked_since = progress.since or now
                if result.check_timeout is not None and now >= checked_since + result.check_timeout:
                    return fail(progress, "HealthCheckFailed", result.message, ctx, now)
                return _check_deadline(progress, ctx, now, result, unhealthy=True)
            return _enter(progress, "Uncordoning", now, deadline=_node_deadline(progress, ctx))
        case "Uncordon":
            soak = parse_duration(policy.strategy.soak_between_nodes)
            if soak.total_seconds() > 0:
                return _enter(progress, "Soaking", now, deadline=now + soak)
            return _done(progress, now)
        case "Soak":
            if progress.deadline is not None and now < progress.deadline:
                return progress
            return _done(progress, now)
        case _:
            return progress


def _after_drain(
    progress: NodeProgress, action: Action, result: Result, ctx: Context, now: datetime.datetime
) -> NodeProgress:
    policy = ctx.policy
    expired = progress.deadline is not None and now >= progress.deadline
    if (
        result.remaining_pods == 0
        and result.binds_pending
        and not action.force
        and _settling(progress, ctx, result.listed_at or now)
    ):
        return replace(
            progress,
            message="nothing left to evict, but the scheduler has pods to bind; "
            "checking again once any placed here before the cordon are bound",
        )
    if result.remaining_pods == 0 or action.force:
        return _enter(progress, "Upgrading", now, deadline=_node_deadline(progress, ctx))
    forced_round_due = policy.drain.on_timeout == "ForceDelete" and not action.force
    if not expired or forced_round_due:
        # A round that began before the deadline and ended after it: the forced round is next.
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


def _after_reboot(
    progress: NodeProgress, action: Action, result: Result, ctx: Context, now: datetime.datetime
) -> NodeProgress:
    """Reboot, AwaitReboot and Rollback: a new boot ID moves on; otherwise keep waiting."""
    if action.kind == "Rollback" and result.reboot_requested:
        return replace(progress, reboot_requested_at=now)
    if result.boot_id is not None and progress.boot_id and result.boot_id != progress.boot_id:
        if progress.phase == "RollingBack":
            if result.version != progress.from_version:
                return fail(
                    progress,
                    "RollbackFailed",
                    f"rolled back but the node runs {result.version}, not {progress.from_version}",
                    ctx,
                    now,
                    allow_rollback=False,
                )
            return replace(
                progress,
                phase="RolledBack",
                since=now,
                reason="RolledBack",
                message=f"rolled back to {progress.from_version} after: {progress.message}",
                deadline=None,
                reboot_requested_at=None,
            )
        return _enter(
            progress,
            "Verifying",
            now,
            deadline=_node_deadline(progress, ctx),
            reboot_requested_at=None,
        )
    if result.reboot_requested:
        return replace(progress, reboot_requested_at=now)
    return _check_deadline(progress, ctx, now, result)


def _drain_outlives_error(progress: NodeProgress, ctx: Context, now: datetime.datetime) -> bool:
    """Past the drain's deadline, an onTimeout other than Fail still gets its round."""
    node_deadline = _node_deadline(progress, ctx)
    return ctx.policy.drain.on_timeout != "Fail" and (node_deadline is None or now < node_deadline)


def _settling(progress: NodeProgress, ctx: Context, listed_at: datetime.datetime) -> bool:
    """Whether an empty drain round looked too soon after the cordon to be trusted.

    The scheduler binds asynchronously: while it has pods to bind, one it placed on the node
    just before the cordon can be bound just after a round found the node empty, and would then
    be rebooted unevicted. The round is judged by when it listed the pods, not when it ended (a
    slow answer about the pending pods is still about that moment: fault seed 393).
    """
    settle = parse_duration(ctx.policy.drain.settle)
    return progress.since is not None and listed_at < progress.since + settle


def fail(
    progress: NodeProgress,
    reason: str,
    message: str,
    ctx: Context,
    now: datetime.datetime,
    *,
    allow_rollback: bool = True,
    interrupted: bool = False,
) -> NodeProgress:
    """A failed attempt (the rules: ``core.failures.fail``)."""
    return failures.fail(
        progress,
        reason,
        message,
        ctx.policy,
        now,
        allow_rollback=allow_rollback,
        interrupted=interrupted,
    )


def _check_deadline(
    progress: NodeProgress,
    ctx: Context,
    now: datetime.datetime,
    result: Result,
    *,
    unhealthy: bool = False,
) -> NodeProgress:
    return failures.past_deadline(
        progress,
        ctx.policy,
        now,
        detail=result.message,
        same_boot=result.ok and not result.transient and result.boot_id == progress.boot_id,
        unhealthy=unhealthy,
    )


def _node_deadline(progress: NodeProgress, ctx: Context) -> datetime.datetime | None:
    return failures.node_deadline(progress, ctx.policy)


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
    changes.update({k: v for k, v in fields.items() if v is not None or k in _CLEARABLE})
    return replace(progress, **changes)


_CLEARABLE = frozenset({"reboot_requested_at", "unconfirmed"})


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
        target=progress.target,
        node_uid=progress.node_uid,
    )
