"""Decides, from a plan, its recorded progress, the node snapshot and ``now``, what starts next.

Pure: no I/O, no clock. Rules, in the order they apply:

- Nodes already on the target version are done without being touched.
- Control-plane nodes go strictly one at a time, and (ordering First) before any worker.
- Workers go zone by zone, higher priority label first, then by name; the operator's own node
  goes last. A canary batch, if set, goes first and is followed by a soak or a pause.
- Never more than maxUnavailable of the selected nodes out of service at once, counting nodes
  that are NotReady or cordoned by someone else. A node that is already out of service adds no
  disruption, so it may start even when the budget is spent by others.
- New nodes start only while the plan is not paused, a maintenance window is open, no retry
  is pending for them, and the failure budget is not exhausted.
- A node has one plan at a time. A node in another plan's in-flight ledger, or carrying another
  plan's cordon mark, is held: no other plan starts it. Of two plans that select a node, the
  older goes first; a plan with nodes in flight also goes before an idle one (a finished plan
  retried or edited waits for the other to hand its nodes back, rather than both acting).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from nodeos.core import windows
from nodeos.core.nodes import NodeView, matches
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec

TERMINAL = frozenset({"Done", "Failed", "RolledBack"})
FAILED = frozenset({"Failed", "RolledBack"})
PREVIEW_BATCHES = 20
PREVIEW_NAMES = 200  # the status's preview stays small whatever the fleet (the first batch always)


@dataclass(frozen=True)
class PlanRef:
    """Another plan, as far as claiming nodes goes."""

    name: str
    created: str  # RFC 3339 creationTimestamp; ties are broken by name
    phase: str
    selector: Mapping[str, object]
    in_flight: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        """Unfinished, or finished with nodes still in its ledger (being handed back)."""
        return self.phase not in ("Completed", "Failed") or bool(self.in_flight)


def plan_ref(body: Mapping[str, Any]) -> PlanRef:
    """A plan object (as the API returns it) reduced to what claiming nodes needs."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return PlanRef(
        name=str(metadata.get("name", "")),
        created=str(metadata.get("creationTimestamp", "")),
        phase=str(status.get("phase", "Pending")),
        selector=dict(spec.get("nodeSelector") or {}),
        in_flight=frozenset(status.get("inFlight") or ()),
    )


def queued_behind(me: PlanRef, others: Sequence[PlanRef], nodes: Sequence[NodeView]) -> str | None:
    """The plan that goes before me on a node we both select, if any.

    It goes first when it is active and older than me, or when it has nodes in flight and I
    have none (so a finished plan that is retried or edited waits for a younger one that is
    already rolling). While queued a plan starts no node; its in-flight nodes finish.
    """
    mine: list[NodeView] | None = None  # made only when another plan could go first
    for other in sorted(others, key=lambda p: (p.created, p.name)):
        if other.name == me.name or not other.active:
            continue
        older = (other.created, other.name) < (me.created, me.name)
        if not (older or (other.in_flight and not me.in_flight)):
            continue
        if mine is None:
            mine = [node for node in nodes if matches(me.selector, node.labels)]
        if any(matches(other.selector, node.labels) for node in mine):
            return other.name
    return None


def held_elsewhere(me: str, others: Sequence[PlanRef], nodes: Sequence[NodeView]) -> dict[str, str]:
    """Nodes another plan holds (in its ledger, or carrying its cordon mark), with the plan."""
    names = {other.name for other in others if other.name != me}
    held = {node.name: str(node.cordoned_by) for node in nodes if node.cordoned_by in names}
    for other in others:
        if other.name != me:
            held.update({name: other.name for name in other.in_flight})
    return held


@dataclass(frozen=True)
class Waiting:
    """Why no (more) nodes start now."""

    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What the planner wants the shell to do and report."""

    start: tuple[str, ...]
    up_to_date: tuple[str, ...]
    batches: tuple[tuple[str, ...], ...]
    total_batches: int
    waiting: Waiting | None
    complete: bool
    failed_budget_exhausted: bool
    next_window: datetime.datetime | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


def max_unavailable(value: int | str, total: int) -> int:
    """The maxUnavailable budget as a count: integers as given, percentages rounded down, >= 1."""
    if isinstance(value, int):
        return max(1, value)
    percent = int(value.rstrip("%"))
    return max(1, math.floor(total * percent / 100))


def is_current(spec: UpgradePlanSpec, node: NodeView) -> bool:
    """Whether the node already has what the plan rolls out (version, and config if any)."""
    if spec.target.version is not None and node.os_version != spec.target.version:
        return False
    return spec.machine_config is None or node.config_drifted is False


def order_nodes(
    spec: UpgradePlanSpec, nodes: Sequence[NodeView], operator_node: str | None
) -> list[NodeView]:
    """Every selected node in the order the plan takes them (excluded control planes omitted)."""
    ordering = spec.strategy.control_plane.ordering
    zone_label = spec.strategy.order.zone_label
    priority_label = spec.strategy.order.priority_label

    def key(node: NodeView) -> tuple[int, str, int, str]:
        return (
            1 if node.name == operator_node else 0,
            node.labels.get(zone_label, ""),
            -_priority(node.labels.get(priority_label)),
            node.name,
        )

    control = sorted((n for n in nodes if n.control_plane), key=key)
    workers = sorted((n for n in nodes if not n.control_plane), key=key)
    if ordering == "Exclude":
        return workers
    return [*control, *workers] if ordering == "First" else [*workers, *control]


def plan_step(
    spec: UpgradePlanSpec,
    progress: Mapping[str, NodeProgress],
    in_flight: Sequence[str],
    nodes: Sequence[NodeView],
    now: datetime.datetime,
    *,
    operator_node: str | None = None,
    canary_hold: Waiting | None = None,
    behind: str | None = None,
    unselected_in_flight: Sequence[NodeView] = (),
    held: Mapping[str, str] | None = None,
    in_order: bool = False,
) -> Decision:
    """The nodes to start now, and the plan's summary.

    ``behind``: see ``queued_behind``; ``held``: see ``held_elsewhere``; ``in_order``: the
    nodes are already in the plan's order (``order_nodes``, as ``Selection.in_order`` keeps it).
    """
    held = held or {}
    ordered = list(nodes) if in_order else order_nodes(spec, nodes, operator_node)
    by_name = {node.name: node for node in ordered}
    flying_names = frozenset(in_flight)  # membership is asked of every node: not of a list
    progress = {
        name: record
        for name, record in progress.items()
        if name in flying_names or name not in by_name or not outdated(record, by_name[name], spec)
    }
    up_to_date = tuple(
        node.name
        for node in ordered
        if node.name not in progress and node.name not in flying_names and is_current(spec, node)
    )
    done_or_flying = flying_names | set(up_to_date)
    remaining = [
        node
        for node in ordered
        if node.name not in done_or_flying
        and progress.get(node.name, _PENDING).phase not in TERMINAL
    ]
    budget = max_unavailable(spec.strategy.max_unavailable, len(ordered))
    counts = _counts(ordered, progress, flying_names, frozenset(up_to_date))
    failures = counts["failed"]
    exhausted = failures > spec.failure_policy.max_failures
    batches = batches_of(remaining, budget)
    complete = bool(ordered) and not remaining and not in_flight
    decision = Decision(
        start=(),
        up_to_date=up_to_date,
        batches=_preview(batches),
        total_batches=len(batches),
        waiting=None,
        complete=complete,
        failed_budget_exhausted=exhausted,
        counts=counts,
    )
    if complete:
        return decision
    if not ordered and not in_flight:
        return _wait(
            decision,
            "NoNodesSelected",
            "spec.nodeSelector matches no node; check its labels (nothing will be upgraded)",
        )
    if exhausted:
        return _wait(
            decision,
            "FailureBudgetExhausted",
            f"{failures} node(s) failed; maxFailures is {spec.failure_policy.max_failures}",
        )
    if behind is not None:
        return _wait(
            decision,
            "Queued",
            f"selects nodes of UpgradePlan {behind}, which came first; waiting for it to finish",
        )
    if spec.paused:
        return _wait(decision, "Paused", "spec.paused is true; in-flight nodes finish")
    if canary_hold is not None:
        return _replace(decision, waiting=canary_hold)
    try:
        window_open = windows.is_open(spec.maintenance_windows, now)
        upcoming = None if window_open else windows.next_opening(spec.maintenance_windows, now)
    except windows.WindowError as error:
        return _wait(decision, "InvalidWindow", str(error))
    if not window_open:
        when = f"; next opens {upcoming:%Y-%m-%d %H:%M}Z" if upcoming else ""
        waiting = _wait(
            decision, "OutsideMaintenanceWindow", f"no maintenance window is open{when}"
        )
        return _replace(waiting, next_window=upcoming)

    # a node in flight counts whether or not the plan still selects it (a selector edit)
    known = {**{n.name: n for n in unselected_in_flight}, **by_name}
    flying = [known[name] for name in in_flight if name in known]
    disrupted = {node.name for node in ordered if node.unavailable} | flying_names
    control_busy = any(node.control_plane for node in flying)
    workers_first = spec.strategy.control_plane.ordering == "Last"
    control_left = [n for n in remaining if n.control_plane]
    workers_left = [n for n in remaining if not n.control_plane]
    start: list[str] = []
    blocked: Waiting | None = None
    for node in remaining:
        if len(in_flight) + len(start) >= budget:
            blocked = blocked or Waiting(
                "MaxUnavailable",
                f"{len(in_flight) + len(start)} node(s) in flight; maxUnavailable is {budget}",
            )
            break
        if node.name in held:
            blocked = blocked or Waiting(
                "NodesHeld", f"{node.name} is held by UpgradePlan {held[node.name]}"
            )
            continue
        record = progress.get(node.name)
        if record is not None and record.retry_at is not None and record.retry_at > now:
            blocked = blocked or Waiting(
                "RetryBackoff", f"{node.name} retries at {record.retry_at}"
            )
            continue
        if not node.ready:
            blocked = blocked or Waiting("NodeNotReady", f"{node.name} is NotReady; waiting")
            continue
        if node.control_plane:
            cp_busy = control_busy or any(by_name[n].control_plane for n in start)
            worker_busy = any(not n.control_plane for n in flying) or any(
                not by_name[n].control_plane for n in start
            )
            if cp_busy or (not workers_first and worker_busy) or (workers_first and workers_left):
                blocked = blocked or Waiting(
                    "ControlPlaneOneAtATime", "control-plane nodes go one at a time"
                )
                continue
        elif not workers_first and (control_left or control_busy):
            blocked = blocked or Waiting(
                "ControlPlaneFirst", "workers start after every control-plane node"
            )
            break
        adds = 0 if node.name in disrupted else 1
        if len(disrupted) + adds > budget:
            outside = sorted(disrupted - set(in_flight))
            blocked = blocked or Waiting(
                "MaxUnavailable",
                f"{len(disrupted)} of {len(ordered)} node(s) out of service (maxUnavailable "
                f"{budget})"
                + (f"; already unavailable: {', '.join(outside[:5])}" if outside else ""),
            )
            continue
        start.append(node.name)
        disrupted.add(node.name)
    canary = spec.strategy.canary.count
    if canary and not _canary_done(ordered, progress, canary):
        start = start[: max(0, canary - _started_count(ordered, progress, flying_names))]
    return _replace(decision, start=tuple(start), waiting=None if start else blocked)


def current(record: NodeProgress, target: str | None, in_flight: Collection[str]) -> bool:
    """Whether a record speaks of the plan's current target (in-flight ones always do)."""
    return record.name in in_flight or record.target is None or record.target == target


def outdated(record: NodeProgress, node: NodeView, spec: UpgradePlanSpec) -> bool:
    """Whether a finished record no longer speaks of this Node.

    The Node was deleted and registered again under the same name (another UID: a replaced
    machine may run the old OS), or it was found up to date and no longer is.
    """
    if record.node_uid and node.uid and record.node_uid != node.uid:
        return True
    return record.reason == "AlreadyUpToDate" and not is_current(spec, node)


@dataclass(frozen=True)
class Selection:
    """The nodes a plan selects, with what the check before each cordon needs of them.

    Made once (``of``), then carried over node by node as views change (``updated``), so
    neither the checks before hundreds of cordons nor each step walk the whole fleet.
    """

    nodes: Mapping[str, NodeView]
    control_planes: tuple[NodeView, ...]
    unavailable: frozenset[str]
    # the names in the plan's order, by ordering settings: valid while no node joins, leaves
    # or changes its labels, and shared by the selections carried over meanwhile
    _orders: dict[tuple[str, str, str, str | None], tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @staticmethod
    def of(nodes: Mapping[str, NodeView]) -> Selection:
        """The selection of these (already selected) nodes."""
        return Selection(
            nodes=nodes,
            control_planes=tuple(n for n in nodes.values() if n.control_plane),
            unavailable=frozenset(n.name for n in nodes.values() if n.unavailable),
        )

    def updated(
        self,
        views: Mapping[str, NodeView],
        changed: Collection[str],
        selector: Mapping[str, object],
    ) -> Selection:
        """This selection once the nodes named ``changed`` became what ``views`` holds now.

        A node absent from ``views`` was deleted. Equal to ``of`` the views ``selector``
        matches, in less work when few of them changed. A node still selected keeps its place
        in ``nodes``.
        """
        nodes = dict(self.nodes)
        unavailable = set(self.unavailable)
        planes_changed = reordered = False
        for name in changed:
            before = nodes.get(name)
            after = views.get(name)
            if after is not None and not matches(selector, after.labels):
                after = None
            if before is None and after is None:
                continue
            if after is None:
                del nodes[name]
            else:
                nodes[name] = after
            unavailable.discard(name)
            if after is not None and after.unavailable:
                unavailable.add(name)
            planes_changed = planes_changed or any(
                view is not None and view.control_plane for view in (before, after)
            )
            moved_in_order = before is None or after is None or before.labels != after.labels
            reordered = reordered or moved_in_order
        return Selection(
            nodes=nodes,
            control_planes=(
                tuple(n for n in nodes.values() if n.control_plane)
                if planes_changed
                else self.control_planes
            ),
            unavailable=frozenset(unavailable),
            _orders={} if reordered else self._orders,
        )

    def in_order(self, spec: UpgradePlanSpec, operator_node: str | None) -> list[NodeView]:
        """``order_nodes`` of the selected nodes, sorted once per change of labels or members."""
        key = (
            spec.strategy.control_plane.ordering,
            spec.strategy.order.zone_label,
            spec.strategy.order.priority_label,
            operator_node,
        )
        names = self._orders.get(key)
        if names is None:
            ordered = order_nodes(spec, list(self.nodes.values()), operator_node)
            self._orders[key] = tuple(node.name for node in ordered)
            return ordered
        return [self.nodes[name] for name in names]


# What the planner reads of a node (not its boot ID, address or config drift)
_PLANNED_FIELDS = ("labels", "ready", "unschedulable", "cordoned_by", "os_image", "uid")


def moves_plan(
    before: NodeView | None,
    after: NodeView | None,
    in_flight: Collection[str],
    selector: Mapping[str, object] | None,
) -> bool:
    """Whether a node's change (None: absent) can change what a plan decides.

    Not the change of a node in flight: until its worker gives the slot back (which wakes the
    plan) it counts as out of service whatever it reports, so its cordon, reboot and return
    change nothing the planner reads. Nor a change of what the planner does not read. A node
    the plan selects (before or after: ``selector`` None when unknown) moves it otherwise.
    """
    node = after or before
    if node is None or node.name in in_flight:
        return False
    if (
        before is not None
        and after is not None
        and all(getattr(before, f) == getattr(after, f) for f in _PLANNED_FIELDS)
    ):
        return False
    if selector is None:
        return True
    return any(matches(selector, view.labels) for view in (before, after) if view)


def still_fits(
    spec: UpgradePlanSpec,
    name: str,
    in_flight: Sequence[str],
    selection: Selection,
    progress: Mapping[str, NodeProgress],
) -> str | None:
    """Why cordoning ``name`` now would break the plan's rules, or None when it still fits.

    A slot is claimed under the rules, but the node may be cordoned much later (its OS API was
    unreachable meanwhile) after others went out of service, or after a retry sent a control
    plane back to pending: checked again just before.
    """
    excluded = spec.strategy.control_plane.ordering == "Exclude"
    me = selection.nodes.get(name)
    if me is None or (excluded and me.control_plane):
        return None
    if not me.control_plane and spec.strategy.control_plane.ordering == "First":
        ahead = sorted(
            n.name
            for n in selection.control_planes
            if not is_current(spec, n) and progress.get(n.name, _PENDING).phase not in TERMINAL
        )
        if ahead:
            return f"control-plane node(s) {', '.join(ahead[:3])} go first and are not done"
    if me.unavailable:
        return None  # already out of service: cordoning it disrupts nothing more
    taken = len(selection.nodes) - (len(selection.control_planes) if excluded else 0)
    budget = max_unavailable(spec.strategy.max_unavailable, taken)
    unavailable = selection.unavailable
    if excluded:
        unavailable = unavailable - {n.name for n in selection.control_planes}
    out = set(unavailable) | set(in_flight)
    out.discard(name)
    if len(out) + 1 <= budget:
        return None
    outside = sorted(out - set(in_flight))  # what changed since the claim is usually here
    return (
        f"{len(out)} other node(s) out of service since its slot was claimed "
        f"(maxUnavailable {budget}): {len(out) - len(outside)} in flight"
        + (f", unavailable besides: {', '.join(outside[:5])}" if outside else "")
    )


def canary_nodes(
    spec: UpgradePlanSpec, nodes: Sequence[NodeView], operator_node: str | None
) -> tuple[str, ...]:
    """The first ``canary.count`` nodes of the order."""
    count = spec.strategy.canary.count
    if not count:
        return ()
    return tuple(node.name for node in order_nodes(spec, nodes, operator_node)[:count])


def _canary_done(
    ordered: Sequence[NodeView], progress: Mapping[str, NodeProgress], count: int
) -> bool:
    finished = sum(1 for n in ordered if progress.get(n.name, _PENDING).phase in TERMINAL)
    return finished >= count


def _started_count(
    ordered: Sequence[NodeView], progress: Mapping[str, NodeProgress], in_flight: AbstractSet[str]
) -> int:
    return sum(
        1
        for n in ordered
        if n.name in in_flight or progress.get(n.name, _PENDING).phase in TERMINAL
    )


def _counts(
    ordered: Sequence[NodeView],
    progress: Mapping[str, NodeProgress],
    in_flight: AbstractSet[str],
    up_to_date: AbstractSet[str],
) -> dict[str, int]:
    phases = [progress.get(n.name, _PENDING).phase for n in ordered]
    updated = sum(1 for phase in phases if phase == "Done") + sum(
        1 for n in ordered if n.name in up_to_date and n.name not in progress
    )
    failed = sum(1 for phase in phases if phase in FAILED)
    in_progress = sum(1 for n in ordered if n.name in in_flight)
    return {
        "total": len(ordered),
        "updated": updated,
        "failed": failed,
        "inProgress": in_progress,
        "pending": len(ordered) - updated - failed - in_progress,
    }


def _preview(batches: Sequence[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """The first batches, at most ``PREVIEW_BATCHES`` of them and ``PREVIEW_NAMES`` names."""
    shown: list[tuple[str, ...]] = []
    names = 0
    for batch in batches[:PREVIEW_BATCHES]:
        if shown and names + len(batch) > PREVIEW_NAMES:
            break
        shown.append(batch)
        names += len(batch)
    return tuple(shown)


def batches_of(remaining: Sequence[NodeView], budget: int) -> list[tuple[str, ...]]:
    """The remaining nodes grouped as they would go: control planes alone, workers by budget."""
    batches: list[tuple[str, ...]] = [(n.name,) for n in remaining if n.control_plane]
    workers = [n.name for n in remaining if not n.control_plane]
    batches += [tuple(workers[i : i + budget]) for i in range(0, len(workers), budget)]
    return batches


def _priority(text: str | None) -> int:
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def _wait(decision: Decision, reason: str, message: str) -> Decision:
    return _replace(decision, waiting=Waiting(reason, message))


def _replace(decision: Decision, **changes: Any) -> Decision:
    return dataclasses.replace(decision, **changes)


_PENDING = NodeProgress(name="", phase="Pending")
