"""What a NodeOSConfig does with the UpgradePlan it owns, given what drifts. Pure.

- Nothing drifts: a finished or never-started plan is deleted (one still running is left to
  finish, or to wait, and reported).
- Something drifts: the plan is created or its spec updated; but a plan that already completed
  with exactly this spec while nodes still drift (one came back later, or was replaced) is
  deleted, so the next refresh creates it afresh and the engine plans those nodes again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Action = Literal["Delete", "Apply", "Keep"]


def rollout_action(
    current: Mapping[str, Any] | None, desired_spec: Mapping[str, Any], *, drifting: bool
) -> tuple[Action, str | None]:
    """What to do with the owned plan, and the phase to report (None: there is no plan)."""
    phase = ((current or {}).get("status") or {}).get("phase")
    if not drifting:
        if current is None:
            return "Keep", None
        if phase in ("Completed", None, "Pending"):
            return "Delete", phase
        return "Keep", phase
    if current is not None and phase == "Completed" and current.get("spec") == desired_spec:
        return "Delete", "Completed"
    return "Apply", str(phase) if phase else "Pending"
