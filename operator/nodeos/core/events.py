"""How many routine node Events a plan posts on itself: a token bucket per plan. Pure.

Every phase change of a node is an Event on that Node: its own history, a handful per rollout.
The plan also hears of them, but a 5,000-node rollout would post 40,000 Events on one object.
So Warnings always go to the plan, and routine (Normal) ones spend a token of the plan's
bucket: ``burst`` at first, then one every ``refill_s``. A rollout of tens of nodes tells its
whole story on the plan; one of thousands posts a few hundred. What is left out is counted
(``nodeos_events_suppressed_total``), and every transition is logged and on its Node anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BURST = 100
REFILL_S = 5.0


@dataclass
class EventBudget:
    """The plan's tokens; ``spend(now)`` takes one if there is one (``now`` in seconds)."""

    burst: int = BURST
    refill_s: float = REFILL_S
    _tokens: float = field(default=-1.0, repr=False)
    _at: float = field(default=0.0, repr=False)

    def spend(self, now: float) -> bool:
        """True (and one token fewer) when the plan may post one more routine Event."""
        if self._tokens < 0:
            self._tokens, self._at = float(self.burst), now
        elapsed = max(0.0, now - self._at)
        self._tokens = min(float(self.burst), self._tokens + elapsed / self.refill_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
