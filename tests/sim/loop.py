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
        self.tasks: list[asyncio.Task[Any]] = []
        self.set_task_factory(self._keep)

    def _keep(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        """Every task is kept until ``settle``, so none is collected mid-run with its outcome
        unread (a killed engine leaves tasks that end in ``Killed``)."""
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        self.tasks.append(task)
        return task

    def settle(self) -> None:
        """Cancels what still runs and reads every task's outcome; call before ``close``."""
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for task in self.tasks:
            if not task.cancelled():
                task.exception()
        self.tasks.clear()

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Moves the clock on (never back)."""
        self._now += max(0.0, seconds)

    def _run_once(self) -> None:  # type: ignore[override]
        self.steps += 1
        super()._run_once()  # type: ignore[misc]
