"""Which OS API endpoint reaches a node, and with which ``node`` routing key.

ControlPlane mode dials the talosconfig's endpoints and routes by the node's address, never
through the node being worked on when another endpoint exists. Node mode dials the node's own
address on the OS API port. The endpoints are read afresh for every target (``live``: the
talosconfig as last loaded), so an endpoint moved in the file or Secret is used from the next
call on, without a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nodeos.core.nodes import NodeView
from nodeos.ports.osapi import NodeTarget


@dataclass(frozen=True)
class Routing:
    """How the operator reaches nodes' OS API."""

    mode: Literal["ControlPlane", "Node"]
    endpoints: Sequence[str] = ()  # as found at start-up; ``live`` supersedes them
    port: int = 50000
    live: Callable[[], Sequence[str]] | None = None

    def target(self, node: NodeView) -> NodeTarget:
        """The endpoint and routing key for ``node``."""
        key = node.address or node.name
        endpoints = list((self.live() if self.live is not None else ()) or self.endpoints)
        if self.mode == "Node" or not endpoints:
            return NodeTarget(name=node.name, endpoint=f"{key}:{self.port}")
        # never through the node being worked on while another endpoint exists
        others = [e for e in endpoints if e.split(":")[0] != node.address]
        ordered = others + [e for e in endpoints if e not in others]
        return NodeTarget(
            name=node.name, endpoint=ordered[0], route=key, fallbacks=tuple(ordered[1:])
        )
