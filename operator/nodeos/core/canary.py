"""Whether the rest of a plan may follow its canary batch. Pure: the clock is passed in.

Once the canary nodes have all finished, the rest waits either for a person (``pauseAfter``:
until the plan carries the annotation ``nodeos.dev/approve``) or for a fixed soak time. The
operator never writes the plan's spec for this: under GitOps a written ``spec.paused`` would
be reverted by the next sync and the hold skipped. The decision, once taken, is recorded in
status as the ``CanaryComplete`` condition, so it is taken once.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodeos.core.planner import TERMINAL, Waiting
from nodeos.models.common import parse_duration
from nodeos.models.rollout import CanaryPolicy
from nodeos.models.upgradeplan import NodeProgress

APPROVE_ANNOTATION = "nodeos.dev/approve"


@dataclass(frozen=True)
class CanaryGate:
    """The canary's verdict for this step."""

    hold: Waiting | None = None  # why the rest waits; None: it may go
    complete: tuple[str, str] | None = None  # (reason, message) to record as CanaryComplete


def gate(
    policy: CanaryPolicy,
    canary_nodes: Sequence[str],
    records: Mapping[str, NodeProgress],
    *,
    recorded: bool,
    approved: bool,
    now: datetime.datetime,
) -> CanaryGate:
    """``recorded``: CanaryComplete is already in status; ``approved``: the plan is annotated."""
    if not policy.count or recorded:
        return CanaryGate()
    finished = [records.get(name) for name in canary_nodes]
    if not all(r is not None and r.phase in TERMINAL for r in finished):
        return CanaryGate()  # the planner itself keeps the rest behind the canary batch
    if policy.pause_after:
        if approved:
            return CanaryGate(complete=("CanaryApproved", f"approved with {APPROVE_ANNOTATION}"))
        return CanaryGate(
            hold=Waiting(
                "CanaryAwaitingApproval",
                f"canary batch done; annotate the plan {APPROVE_ANNOTATION}=true to continue",
            )
        )
    if policy.soak:
        ended = max((r.since for r in finished if r is not None and r.since), default=now)
        until = ended + parse_duration(policy.soak)
        if now < until:
            return CanaryGate(
                hold=Waiting("CanarySoak", f"canary batch done; soaking until {until:%H:%M:%S}Z")
            )
        return CanaryGate(complete=("CanarySoaked", "canary batch done and soaked"))
    return CanaryGate(complete=("CanaryDone", "canary batch done"))
