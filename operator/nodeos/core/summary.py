"""What a plan reports: its phase and message from the planner's decision, and its conditions.

Pure. The engine computes the decision from the very status it is about to write, so the
phase never describes an older state (no "Pending" between the last node and "Completed").
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from nodeos.core.planner import Decision
from nodeos.models.common import Condition

RETRY_HINT = "fix the cause, then annotate nodeos.dev/retry=true or change the spec"
_WAIT_PHASES = {"Paused": "Paused", "Queued": "Queued"}


def plan_phase(decision: Decision, in_flight: Sequence[str], target: str | None) -> tuple[str, str]:
    """The plan's phase and a one-line message."""
    counts = decision.counts
    failed = counts.get("failed", 0)
    if decision.failed_budget_exhausted and not in_flight:
        why = decision.waiting.message if decision.waiting else "failure budget spent"
        return "Failed", f"{why}; {RETRY_HINT}"
    if decision.complete:
        message = f"{counts.get('updated', 0)} of {counts.get('total', 0)} node(s) on {target}"
        return "Completed", message + (f"; {failed} failed" if failed else "")
    if in_flight or decision.start:
        message = f"in flight: {', '.join(in_flight)}"
        return "Progressing", message + (
            f"; {decision.waiting.message}" if decision.waiting else ""
        )
    if decision.waiting is not None:
        return _WAIT_PHASES.get(decision.waiting.reason, "Waiting"), decision.waiting.message
    return "Pending", "nothing to do yet"


def set_condition(
    conditions: Sequence[Condition],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """``conditions`` with ``kind`` set; lastTransitionTime moves only when the status flips."""
    text = "True" if status else "False"
    current = next((c for c in conditions if c.type == kind), None)
    updated = Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message[:1024],
        last_transition_time=(
            current.last_transition_time if current is not None and current.status == text else now
        ),
        observed_generation=generation,
    )
    if current is None:
        return [*conditions, updated]
    return [updated if c.type == kind else c for c in conditions]
