"""The process-wide fence: once closed, no adapter sends another request.

A replica that can no longer prove it holds the leader Lease closes the fence before the Lease
can expire for anyone else. Every adapter checks it before each request, so from then on
nothing this process does reaches the cluster or a node, whatever its tasks are doing while
they are being cancelled.
"""

from __future__ import annotations


class FencedError(Exception):
    """This process is fenced off (it lost the leader Lease); the request was not sent."""


class Fence:
    """Open until ``close``; ``check`` raises ``FencedError`` afterwards."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def close(self, reason: str) -> None:
        """Refuses every request from now on."""
        if self.reason is None:
            self.reason = reason

    def check(self) -> None:
        """Raises ``FencedError`` once the fence is closed."""
        if self.reason is not None:
            raise FencedError(f"not sent: {self.reason}")


FENCE = Fence()
