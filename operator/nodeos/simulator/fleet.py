"""The simulated fleet: nodes by name and address, etcd leadership, and the journal of calls.

Shared by every gRPC servicer. Time comes from an injected clock; ``advance`` moves every node
along and hands power changes to the listeners (e.g. the Kubernetes Node driver).
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from nodeos.simulator.node import Power, SimulatedNode, Transition

Clock = Callable[[], float]
Listener = Callable[[Transition], None]
# the common name of the client certificate of the call being served (set per call)
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


@dataclass(frozen=True)
class Call:
    """One call the simulator served (or refused)."""

    at: float  # wall-clock seconds
    node: str
    method: str
    code: str
    client: str = ""  # the caller's certificate common name


class Fleet:
    """Every simulated node, plus what they share."""

    def __init__(self, nodes: list[SimulatedNode], clock: Clock = time.monotonic) -> None:
        self.nodes = {node.name: node for node in nodes}
        self._by_address = {node.address: node for node in nodes}
        self.clock = clock
        self.calls: list[Call] = []
        self.listeners: list[Listener] = []
        self.journal: Path | None = None
        self.outages: Path | None = None  # {"node": until (epoch seconds)}, edited by tests
        self._outages_seen: tuple[float, dict[str, float]] = (0.0, {})
        control_planes = [node for node in nodes if node.control_plane]
        self.etcd_leader: str | None = control_planes[0].name if control_planes else None
        self._timed: dict[str, SimulatedNode] = {}  # nodes with a reboot or revert due, in order
        for node in nodes:
            node.on_timer = self._timer_set
            if node.timed():
                self._timer_set(node)

    def find(self, key: str) -> SimulatedNode | None:
        """A node by name or by address."""
        return self.nodes.get(key) or self._by_address.get(key)

    def cut_off(self, name: str) -> bool:
        """Whether the outages file makes the node's OS API unreachable now.

        A network fault: the node itself runs on.
        """
        if self.outages is None:
            return False
        try:
            stamp = self.outages.stat().st_mtime
        except OSError:
            return False
        if stamp != self._outages_seen[0]:
            try:
                until = {str(k): float(v) for k, v in json.loads(self.outages.read_text()).items()}
            except (OSError, ValueError):
                until = {}
            self._outages_seen = (stamp, until)
        return time.time() < self._outages_seen[1].get(name, 0.0)

    def control_planes(self) -> list[SimulatedNode]:
        """The control-plane nodes, in name order."""
        return sorted((n for n in self.nodes.values() if n.control_plane), key=lambda n: n.name)

    def advance(self) -> list[Transition]:
        """Moves every node to now; elects a new etcd leader if the leader went down.

        Only nodes with a timer set are visited: the others cannot change with time.
        """
        now = self.clock()
        transitions = []
        for node in list(self._timed.values()):
            transition = node.advance(now)
            if transition is not None:
                transitions.append(transition)
            if not node.timed():
                del self._timed[node.name]
        if self.etcd_leader is not None and self.nodes[self.etcd_leader].power in (
            Power.REBOOTING,
            Power.DOWN,
        ):
            self.etcd_leader = self._next_leader(exclude=self.etcd_leader)
        if self.etcd_leader is None:
            self.etcd_leader = self._next_leader(exclude=None)
        for transition in transitions:
            for listener in self.listeners:
                listener(transition)
        return transitions

    def forfeit_leadership(self, name: str) -> str:
        """Moves etcd leadership off ``name`` if it leads; returns the new leader's name.

        As Talos v1.13 (internal/pkg/etcd, ForfeitLeadership): "" when ``name`` did not lead.
        """
        if self.etcd_leader != name:
            return ""
        self.etcd_leader = self._next_leader(exclude=name)
        return self.etcd_leader or ""

    def record(self, node: str, method: str, code: str) -> None:
        """Adds a call to the journal (memory, and the journal file when set)."""
        call = Call(at=time.time(), node=node, method=method, code=code, client=CALLER.get())
        self.calls.append(call)
        if self.journal is not None:
            with self.journal.open("a") as out:
                out.write(json.dumps(asdict(call)) + "\n")

    def count(self, method: str, node: str | None = None, code: str = "OK") -> int:
        """How many calls of ``method`` (to ``node``) ended with ``code``."""
        return sum(
            1
            for call in self.calls
            if call.method == method and call.code == code and (node is None or call.node == node)
        )

    def _timer_set(self, node: SimulatedNode) -> None:
        self._timed[node.name] = node

    def _next_leader(self, exclude: str | None) -> str | None:
        for node in self.control_planes():
            if node.name != exclude and node.power is Power.RUNNING:
                return node.name
        return None


def read_journal(path: Path) -> list[Call]:
    """The calls recorded in a journal file (by a simulator in another process)."""
    if not path.exists():
        return []
    return [Call(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
