"""How a node's attempt ends when it fails or outlives its deadline. Pure.

- A failure is retried (back to Pending, with exponential backoff from ``retryBackoff``, at
  most an hour) while the attempts that count stay within ``retries``; attempts ended through
  no fault of the node (an install whose outcome was unknown and did not take) do not count,
  at most ``MAX_INTERRUPTIONS`` times, and retry at once.
- ``BootFallback``, ``NotRebooted``, ``NeverReturned`` and ``RollbackFailed`` are never
  retried: doing the same again would not help, or the node may be gone.
- An ``Unhealthy`` node with ``failurePolicy.rollback`` is rolled back instead of failed.
- Past its deadline each phase fails with the reason that says what did not happen.
"""

from __future__ import annotations

import datetime

from nodeos.models.common import parse_duration
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import NodeProgress

MAX_INTERRUPTIONS = 3
# A node already on the target whose After check fails is not installed again: a retry would
# find it up to date. It is rolled back (failurePolicy.rollback) or fails.
NOT_RETRIED = frozenset(
    {"BootFallback", "NotRebooted", "NeverReturned", "RollbackFailed", "HealthCheckFailed"}
)
ROLLED_BACK_ON = frozenset({"Unhealthy", "HealthCheckFailed"})


def fail(
    progress: NodeProgress,
    reason: str,
    message: str,
    rules: RolloutPolicy,
    now: datetime.datetime,
    *,
    allow_rollback: bool = True,
    interrupted: bool = False,
) -> NodeProgress:
    """A failed attempt: back to Pending with a retry time, or Failed when out of retries.

    ``interrupted``: the attempt ended through no fault of the node (an unconfirmed install);
    the next attempt does not count against ``retries``.
    """
    policy = rules.failure_policy
    attempt = progress.attempt or 0
    free = (progress.interrupted or 0) + (1 if interrupted else 0)
    free = min(free, MAX_INTERRUPTIONS)
    counted = attempt + 1 - free
    common: dict[str, object] = {
        "since": now,
        "reason": reason,
        "message": message,
        "deadline": None,
        "reboot_requested_at": None,
        "unconfirmed": None,
    }
    if reason not in NOT_RETRIED and counted <= policy.retries:
        backoff = parse_duration(policy.retry_backoff) * (2 ** max(0, counted - 1))
        backoff = min(backoff, datetime.timedelta(hours=1))
        if interrupted:
            backoff = datetime.timedelta(0)
        return _replace(
            progress,
            phase="Pending",
            attempt=attempt + 1,
            interrupted=free or None,
            retry_at=now + backoff,
            **common,
        )
    if policy.rollback and allow_rollback and reason in ROLLED_BACK_ON:
        return _replace(
            progress,
            phase="RollingBack",
            **{**common, "deadline": now + parse_duration(policy.node_timeout)},
        )
    return _replace(progress, phase="Failed", retry_at=None, **common)


def past_deadline(
    progress: NodeProgress,
    rules: RolloutPolicy,
    now: datetime.datetime,
    *,
    detail: str,
    same_boot: bool,
    unhealthy: bool = False,
) -> NodeProgress:
    """``progress`` unchanged before its deadline; after it, the failure the phase calls for.

    ``same_boot``: the last look at the node answered with the boot ID from before the reboot
    (installed, never rebooted); ``unhealthy``: Verify found it on the target but not healthy.
    """
    if progress.deadline is None or now < progress.deadline:
        return progress
    message = detail
    detail = detail or "no progress"
    match progress.phase:
        case "Rebooting" if progress.reboot_requested_at is None:
            return fail(
                progress,
                "Unreachable",
                f"could not ask the node to reboot before the deadline ({detail})",
                rules,
                now,
            )
        case "Rebooting":
            if same_boot:
                return fail(
                    progress,
                    "NotRebooted",
                    "installed but the node never rebooted (boot ID unchanged at the deadline)",
                    rules,
                    now,
                )
            return fail(
                progress,
                "NeverReturned",
                f"the node did not come back from its reboot before the deadline ({detail})",
                rules,
                now,
            )
        case "RollingBack":
            return fail(
                progress,
                "RollbackFailed",
                f"the rollback did not finish before the deadline ({detail})",
                rules,
                now,
                allow_rollback=False,
            )
        case "Verifying" if unhealthy:
            return fail(progress, "Unhealthy", message or "not Ready after the upgrade", rules, now)
        case _:
            return fail(
                progress,
                "Timeout",
                f"{progress.phase} did not finish before its deadline ({detail})",
                rules,
                now,
            )


def node_deadline(progress: NodeProgress, rules: RolloutPolicy) -> datetime.datetime | None:
    """The attempt's overall deadline: ``nodeTimeout`` from its start."""
    started = progress.started_at if progress.started_at else progress.since
    if started is None:
        return None
    return started + parse_duration(rules.failure_policy.node_timeout)


def _replace(progress: NodeProgress, **changes: object) -> NodeProgress:
    return progress.model_copy(update=changes)
