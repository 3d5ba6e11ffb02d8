from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeos.core import planner
from nodeos.core.nodes import CONTROL_PLANE_LABEL, NodeView
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
TARGET = "v1.13.9"


def spec(**overrides: Any) -> UpgradePlanSpec:
    body: dict[str, Any] = {
        "target": {"version": TARGET},
        "nodeSelector": {"matchLabels": {"pool": "a"}},
    }
    body.update(overrides)
    return UpgradePlanSpec.model_validate(body)


def node(
    name: str,
    *,
    cp: bool = False,
    ready: bool = True,
    cordoned: bool = False,
    by: str | None = None,
    version: str = "v1.12.4",
    zone: str = "",
    priority: str | None = None,
) -> NodeView:
    labels = {"pool": "a"}
    if cp:
        labels[CONTROL_PLANE_LABEL] = ""
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    if priority is not None:
        labels["nodeos.dev/priority"] = priority
    return NodeView(name, labels, ready, cordoned, by, f"Talos ({version})")


def fleet(cps: int = 3, workers: int = 5) -> list[NodeView]:
    return [node(f"cp-{i}", cp=True) for i in range(1, cps + 1)] + [
        node(f"w-{i}") for i in range(1, workers + 1)
    ]


def done(*names: str) -> dict[str, NodeProgress]:
    return {n: NodeProgress(name=n, phase="Done", since=NOW) for n in names}


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(1, 10, 1), (3, 10, 3), ("10%", 10, 1), ("25%", 10, 2), ("1%", 10, 1), ("100%", 8, 8)],
)
def test_max_unavailable(value: int | str, total: int, expected: int) -> None:
    assert planner.max_unavailable(value, total) == expected


def test_control_plane_first_one_at_a_time() -> None:
    s = spec(strategy={"maxUnavailable": 3})
    nodes = fleet()
    assert planner.plan_step(s, {}, [], nodes, NOW).start == ("cp-1",)
    decision = planner.plan_step(s, {}, ["cp-1"], nodes, NOW)
    assert decision.start == ()
    assert decision.waiting is not None
    assert decision.waiting.reason == "ControlPlaneOneAtATime"
    assert planner.plan_step(s, done("cp-1"), [], nodes, NOW).start == ("cp-2",)
    after_cps = planner.plan_step(s, done("cp-1", "cp-2", "cp-3"), [], nodes, NOW)
    assert after_cps.start == ("w-1", "w-2", "w-3")


def test_workers_wait_for_every_control_plane_node() -> None:
    decision = planner.plan_step(
        spec(strategy={"maxUnavailable": 5}), done("cp-1"), ["cp-2"], fleet(), NOW
    )
    assert decision.start == ()


def test_control_plane_last_and_excluded() -> None:
    nodes = fleet(cps=2, workers=2)
    last = spec(strategy={"maxUnavailable": 2, "controlPlane": {"ordering": "Last"}})
    assert planner.plan_step(last, {}, [], nodes, NOW).start == ("w-1", "w-2")
    assert planner.plan_step(last, done("w-1", "w-2"), [], nodes, NOW).start == ("cp-1",)
    excluded = spec(strategy={"maxUnavailable": 2, "controlPlane": {"ordering": "Exclude"}})
    decision = planner.plan_step(excluded, {}, [], nodes, NOW)
    assert decision.start == ("w-1", "w-2")
    assert decision.counts["total"] == 2


def test_already_unavailable_nodes_count_against_the_budget() -> None:
    nodes = [node("w-1"), node("w-2", ready=False), node("w-3"), node("w-4")]
    decision = planner.plan_step(spec(strategy={"maxUnavailable": 2}), {}, [], nodes, NOW)
    assert decision.start == ("w-1",)


def test_a_node_cordoned_by_someone_else_goes_for_free() -> None:
    nodes = [node("w-1"), node("w-2", cordoned=True), node("w-3")]
    decision = planner.plan_step(spec(), {}, [], nodes, NOW)
    assert decision.start == ("w-2",), "w-1 would be a second disruption; w-2 is already out"


def test_ordering_by_zone_then_priority_then_name_operator_last() -> None:
    nodes = [
        node("w-a", zone="b"),
        node("w-b", zone="a"),
        node("w-c", zone="a", priority="10"),
        node("w-op", zone="a"),
    ]
    ordered = planner.order_nodes(spec(), nodes, operator_node="w-op")
    assert [n.name for n in ordered] == ["w-c", "w-b", "w-a", "w-op"]


def test_nodes_on_the_target_version_are_not_touched() -> None:
    nodes = [node("w-1", version=TARGET), node("w-2")]
    decision = planner.plan_step(spec(), {}, [], nodes, NOW)
    assert decision.up_to_date == ("w-1",)
    assert decision.start == ("w-2",)


def test_complete_when_every_node_is_terminal() -> None:
    nodes = fleet(1, 1)
    decision = planner.plan_step(spec(), done("cp-1", "w-1"), [], nodes, NOW)
    assert decision.complete
    assert decision.counts["updated"] == 2


def test_paused_and_failure_budget_stop_new_starts() -> None:
    nodes = fleet(0, 3)
    paused = planner.plan_step(spec(paused=True), {}, [], nodes, NOW)
    assert paused.start == ()
    assert paused.waiting is not None
    assert paused.waiting.reason == "Paused"
    failed = {"w-1": NodeProgress(name="w-1", phase="Failed", reason="InstallFailed")}
    stopped = planner.plan_step(spec(failurePolicy={"maxFailures": 0}), failed, [], nodes, NOW)
    assert stopped.failed_budget_exhausted
    assert stopped.start == ()
    tolerated = planner.plan_step(spec(failurePolicy={"maxFailures": 1}), failed, [], nodes, NOW)
    assert tolerated.start == ("w-2",)


def test_retry_backoff_is_respected() -> None:
    later = NOW + datetime.timedelta(minutes=1)
    record = {"w-1": NodeProgress(name="w-1", phase="Pending", attempt=1, retry_at=later)}
    nodes = fleet(0, 2)
    assert planner.plan_step(spec(), record, [], nodes, NOW).start == ("w-2",)
    assert planner.plan_step(spec(), record, [], nodes, later).start == ("w-1",)


def test_canary_limits_the_first_batch() -> None:
    s = spec(strategy={"maxUnavailable": 3, "canary": {"count": 1, "soak": "10m"}})
    nodes = fleet(0, 5)
    assert planner.plan_step(s, {}, [], nodes, NOW).start == ("w-1",)
    assert planner.plan_step(s, {}, ["w-1"], nodes, NOW).start == ()
    held = planner.plan_step(
        s, done("w-1"), [], nodes, NOW, canary_hold=planner.Waiting("CanarySoak", "soaking")
    )
    assert held.start == ()
    assert planner.plan_step(s, done("w-1"), [], nodes, NOW).start == ("w-2", "w-3", "w-4")


def test_maintenance_window_gates_starts() -> None:
    window = {"days": ["Thu"], "start": "13:00", "end": "14:00", "timeZone": "UTC"}
    s = spec(maintenanceWindows=[window])
    closed = planner.plan_step(s, {}, [], fleet(0, 1), NOW)
    assert closed.start == ()
    assert closed.next_window == datetime.datetime(2026, 11, 26, 13, 0, tzinfo=datetime.UTC)
    opened = planner.plan_step(s, {}, [], fleet(0, 1), NOW + datetime.timedelta(hours=1))
    assert opened.start == ("w-1",)


def test_preview_batches() -> None:
    decision = planner.plan_step(spec(strategy={"maxUnavailable": 2}), {}, [], fleet(2, 5), NOW)
    assert decision.batches == (("cp-1",), ("cp-2",), ("w-1", "w-2"), ("w-3", "w-4"), ("w-5",))
    assert decision.total_batches == 5


def test_the_preview_is_bounded_whatever_the_fleet() -> None:
    big = planner.plan_step(spec(strategy={"maxUnavailable": 500}), {}, [], fleet(0, 5000), NOW)
    assert big.total_batches == 10
    assert sum(len(batch) for batch in big.batches) == 500, "the first batch, even past 200"
    small = planner.plan_step(spec(strategy={"maxUnavailable": 30}), {}, [], fleet(0, 5000), NOW)
    shown = sum(len(batch) for batch in small.batches)
    assert small.batches and shown <= planner.PREVIEW_NAMES
    assert small.total_batches == 167


node_states = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    states=st.lists(node_states, min_size=1, max_size=12),
    budget=st.integers(min_value=1, max_value=5),
    flying=st.sets(st.integers(min_value=0, max_value=11), max_size=4),
)
def test_never_exceeds_max_unavailable_or_two_control_planes(
    states: list[tuple[bool, bool, bool, bool]], budget: int, flying: set[int]
) -> None:
    nodes = [
        node(f"n-{i:02d}", cp=cp, ready=ready, cordoned=cordoned)
        for i, (cp, ready, cordoned, _) in enumerate(states)
    ]
    in_flight = [nodes[i].name for i in sorted(flying) if i < len(nodes)]
    cps_in_flight = [n for n in nodes if n.name in in_flight and n.control_plane]
    if len(cps_in_flight) > 1:
        return  # not a state the planner can reach
    s = spec(strategy={"maxUnavailable": budget})
    decision = planner.plan_step(s, {}, in_flight, nodes, NOW)
    before = {n.name for n in nodes if n.unavailable} | set(in_flight)
    after = before | set(decision.start)
    assert len(after) <= max(budget, len(before)), "never adds disruption past the budget"
    assert len(in_flight) + len(decision.start) <= max(budget, len(in_flight))
    starting_cps = [n for n in nodes if n.name in decision.start and n.control_plane]
    assert len(starting_cps) + len(cps_in_flight) <= 1
    if starting_cps:
        assert not [n for n in in_flight if not next(x for x in nodes if x.name == n).control_plane]
    assert all(n in {x.name for x in nodes if x.ready} for n in decision.start)
    assert decision == planner.plan_step(s, {}, in_flight, list(reversed(nodes)), NOW)


def ref(
    name: str,
    created: str,
    selector: dict[str, object],
    phase: str = "Progressing",
    in_flight: frozenset[str] = frozenset(),
) -> planner.PlanRef:
    return planner.PlanRef(
        name=name, created=created, phase=phase, selector=selector, in_flight=in_flight
    )


def test_a_younger_plan_selecting_the_same_nodes_queues_behind_the_older() -> None:
    nodes = [node("w-1"), node("w-2")]
    everyone = {"matchLabels": {"pool": "a"}}
    older = ref("first", "2026-11-26T10:00:00Z", everyone)
    younger = ref("second", "2026-11-26T11:00:00Z", everyone)
    assert planner.queued_behind(younger, [older, younger], nodes) == "first"
    assert planner.queued_behind(older, [older, younger], nodes) is None
    done = ref("first", "2026-11-26T10:00:00Z", everyone, phase="Completed")
    assert planner.queued_behind(younger, [done], nodes) is None
    elsewhere = ref("other", "2026-11-26T09:00:00Z", {"matchLabels": {"pool": "b"}})
    assert planner.queued_behind(younger, [elsewhere], nodes) is None
    same_time = ref("a-plan", "2026-11-26T11:00:00Z", everyone)
    assert planner.queued_behind(younger, [same_time], nodes) == "a-plan", "ties: by name"


def test_a_finished_plan_brought_back_waits_for_a_younger_one_with_nodes_in_flight() -> None:
    nodes = [node("w-1"), node("w-2")]
    everyone = {"matchLabels": {"pool": "a"}}
    retried = ref("first", "2026-11-26T10:00:00Z", everyone, phase="Failed")
    rolling = ref("second", "2026-11-26T11:00:00Z", everyone, in_flight=frozenset({"w-1"}))
    assert planner.queued_behind(retried, [retried, rolling], nodes) == "second"
    # ... and the younger one, now behind an active older plan, lets its in-flight nodes finish
    waiting = ref("first", "2026-11-26T10:00:00Z", everyone, phase="Queued")
    assert planner.queued_behind(rolling, [waiting, rolling], nodes) == "first"
    idle = ref("second", "2026-11-26T11:00:00Z", everyone)
    assert planner.queued_behind(retried, [retried, idle], nodes) is None


def test_a_node_held_by_another_plan_is_not_started() -> None:
    nodes = [node("w-1"), node("w-2", cordoned=True, by="other"), node("w-3")]
    others = [
        ref("other", "2026-11-26T10:00:00Z", {}, in_flight=frozenset({"w-3"})),
        ref("mine", "2026-11-26T11:00:00Z", {}),
    ]
    held = planner.held_elsewhere("mine", others, nodes)
    assert held == {"w-2": "other", "w-3": "other"}
    assert planner.held_elsewhere("mine", others[1:], nodes) == {}, "a stale mark holds nothing"
    decision = planner.plan_step(
        spec(strategy={"maxUnavailable": 3}), {}, [], nodes, NOW, held=held
    )
    assert decision.start == ("w-1",)
    only_held = planner.plan_step(
        spec(strategy={"maxUnavailable": 3}), done("w-1"), [], nodes, NOW, held=held
    )
    assert only_held.start == ()
    assert only_held.waiting is not None
    assert only_held.waiting.reason == "NodesHeld"


def test_a_queued_plan_starts_nothing_and_says_behind_whom() -> None:
    decision = planner.plan_step(spec(), {}, [], fleet(0, 2), NOW, behind="first")
    assert decision.start == ()
    assert decision.waiting is not None
    assert decision.waiting.reason == "Queued"
    assert "UpgradePlan first" in decision.waiting.message


# -- which node changes wake a plan ------------------------------------------------------------


def test_a_plan_is_moved_by_what_the_planner_reads_of_nodes_it_selects_and_not_in_flight() -> None:
    pool_a = {"matchLabels": {"pool": "a"}}
    before = node("w-1")
    assert planner.moves_plan(before, node("w-1", ready=False), [], pool_a)
    assert planner.moves_plan(before, node("w-1", cordoned=True, by="someone"), [], pool_a)
    assert planner.moves_plan(None, before, [], pool_a), "a node joined"
    assert planner.moves_plan(before, None, [], pool_a), "a node left"
    rebooted = NodeView(**{**before.__dict__, "boot_id": "new", "address": "10.0.0.9"})
    assert not planner.moves_plan(before, rebooted, [], pool_a), "not read by the planner"
    assert not planner.moves_plan(before, node("w-1", ready=False), ["w-1"], pool_a), (
        "in flight: its worker's business until the slot is given back"
    )
    assert not planner.moves_plan(
        before, node("w-1", ready=False), [], {"matchLabels": {"pool": "b"}}
    )
    assert planner.moves_plan(before, node("w-1", ready=False), [], None), "selector unknown"


_VIEW = st.tuples(
    st.sampled_from(["a", "b"]),  # pool: the selector takes "a"
    st.booleans(),  # control plane
    st.booleans(),  # ready
    st.booleans(),  # cordoned
    st.sampled_from(["", "1", "5"]),  # priority
)
_ORDERINGS = [
    ({"controlPlane": {"ordering": ordering}}, operator)
    for ordering in ("First", "Last", "Exclude")
    for operator in (None, "n-2")
]


@settings(max_examples=200, deadline=None)
@given(
    first=st.dictionaries(st.integers(0, 7), _VIEW, max_size=8),
    rounds=st.lists(
        st.dictionaries(st.integers(0, 9), st.one_of(st.none(), _VIEW), max_size=4),
        max_size=4,
    ),
)
def test_a_selection_carried_over_change_by_change_is_the_one_made_afresh(
    first: dict[int, tuple[str, bool, bool, bool, str]],
    rounds: list[dict[int, tuple[str, bool, bool, bool, str] | None]],
) -> None:
    selector: dict[str, object] = {"matchLabels": {"pool": "a"}}
    specs = [(spec(strategy=strategy), operator) for strategy, operator in _ORDERINGS]

    def view(i: int, pool: str, cp: bool, ready: bool, cordoned: bool, rank: str) -> NodeView:
        labels = {"pool": pool} | ({CONTROL_PLANE_LABEL: ""} if cp else {})
        labels |= {"nodeos.dev/priority": rank} if rank else {}
        return NodeView(f"n-{i}", labels, ready, cordoned, None, "Talos (v1.12.4)")

    def selected(views: dict[str, NodeView]) -> dict[str, NodeView]:
        return {name: v for name, v in views.items() if v.labels["pool"] == "a"}

    views = {f"n-{i}": view(i, *state) for i, state in first.items()}
    selection = planner.Selection.of(selected(views))
    for changes in rounds:
        for i, state in changes.items():
            if state is None:
                views.pop(f"n-{i}", None)
            else:
                views[f"n-{i}"] = view(i, *state)
        kept_order = [name for name in selection.nodes if name in selected(views)]
        selection = selection.updated(views, {f"n-{i}" for i in changes}, selector)
        fresh = planner.Selection.of(selected(views))
        for plan, operator in specs:  # sorted once, then kept while no label or member changes
            expected = planner.order_nodes(plan, list(fresh.nodes.values()), operator)
            assert selection.in_order(plan, operator) == expected
        assert selection.nodes == fresh.nodes
        assert selection.unavailable == fresh.unavailable
        assert sorted(n.name for n in selection.control_planes) == sorted(
            n.name for n in fresh.control_planes
        )
        assert all(selection.nodes[n.name] is n for n in selection.control_planes), (
            "the control planes as they are now"
        )
        assert list(selection.nodes)[: len(kept_order)] == kept_order, "a kept node keeps its place"
