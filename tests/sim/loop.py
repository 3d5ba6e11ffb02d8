"""An asyncio event loop on virtual time: a sleep returns at once, with the clock moved on.

Nothing in the simulation does real I/O, so whenever the loop would block it instead advances
its clock to the next timer. A seed therefore runs in milliseconds and replays exactly. A loop
with nothing scheduled and nothing ready is deadlocked; it says so rather than hang.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class DeadlockError(RuntimeError):
    """Nothing can ever run again: no timer is set and no callback is ready."""


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready:
            return ready
        assert self.loop is not None
        if timeout is None:
            raise DeadlockError("the simulation has nothing scheduled")
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` only moves when the loop would otherwise wait."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        self._now = 0.0
        super().__init__(selector)
        selector.loop = self
        self.steps = 0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Moves the clock on (never back)."""
        self._now += max(0.0, seconds)

    def _run_once(self) -> None:  # type: ignore[override]
        self.steps += 1
        super()._run_once()  # type: ignore[misc]
