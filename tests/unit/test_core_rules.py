"""Table tests of the small pure rules the engine asks: canary, reset, etcd, drain, owned plan."""

from __future__ import annotations

import datetime

import pytest

from nodeos.core import canary, etcd
from nodeos.core.pods import must_leave
from nodeos.core.reset import after_change
from nodeos.core.rollouts import rollout_action
from nodeos.models.rollout import CanaryPolicy, DrainPolicy
from nodeos.models.upgradeplan import NodeProgress
from nodeos.ports.kube import PodView
from nodeos.ports.osapi import EtcdMember, EtcdMemberStatus

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
OLD, NEW = "v1.12.4", "v1.13.9"


def record(name: str, phase: str, **fields: object) -> NodeProgress:
    return NodeProgress.model_validate({"name": name, "phase": phase, **fields})


# -- canary ------------------------------------------------------------------------------------

DONE_AGO = {"c": record("c", "Done", since=NOW - datetime.timedelta(minutes=5))}


@pytest.mark.parametrize(
    ("policy", "records", "recorded", "approved", "hold", "complete"),
    [
        ({"count": 0}, {}, False, False, None, None),
        ({"count": 1, "pauseAfter": True}, {}, False, False, None, None),  # canary still going
        ({"count": 1, "pauseAfter": True}, DONE_AGO, False, False, "CanaryAwaitingApproval", None),
        ({"count": 1, "pauseAfter": True}, DONE_AGO, False, True, None, "CanaryApproved"),
        ({"count": 1, "pauseAfter": True}, DONE_AGO, True, False, None, None),  # decided before
        ({"count": 1, "soak": "10m"}, DONE_AGO, False, False, "CanarySoak", None),
        ({"count": 1, "soak": "4m"}, DONE_AGO, False, False, None, "CanarySoaked"),
        ({"count": 1}, DONE_AGO, False, False, None, "CanaryDone"),
    ],
)
def test_canary_gate(
    policy: dict[str, object],
    records: dict[str, NodeProgress],
    recorded: bool,
    approved: bool,
    hold: str | None,
    complete: str | None,
) -> None:
    verdict = canary.gate(
        CanaryPolicy.model_validate(policy),
        ["c"],
        records,
        recorded=recorded,
        approved=approved,
        now=NOW,
    )
    assert (verdict.hold.reason if verdict.hold else None) == hold
    assert (verdict.complete[0] if verdict.complete else None) == complete
    if hold == "CanaryAwaitingApproval":
        assert canary.APPROVE_ANNOTATION in verdict.hold.message  # type: ignore[union-attr]


# -- reset after a spec change or a retry ------------------------------------------------------


def test_a_spec_change_keeps_in_flight_nodes_and_restarts_failed_ones() -> None:
    nodes = {
        "flying": record("flying", "Draining", cordonedByUs=True),
        "done": record("done", "Done", target=NEW),
        "old-target": record("old-target", "Done", target=OLD, cordonedByUs=False),
        # Done is reached by the uncordon, whatever the record says of the cordon (fault seed 211)
        "old-done": record("old-done", "Done", target=OLD),
        "failed-kept": record("failed-kept", "Failed", cordonedByUs=True, retryAt=NOW),
        "failed-free": record("failed-free", "Failed", cordonedByUs=False),
        # failed, its slot not yet given back (or the earlier reset's record write was lost)
        "failed-flying": record("failed-flying", "Failed", cordonedByUs=True),
    }
    records, ledger = after_change(nodes, ["flying", "failed-flying"], NEW)
    assert records["flying"] == nodes["flying"]
    assert records["done"] == nodes["done"]
    assert not {"old-target", "old-done", "failed-free"} & set(records), "planned again as new"
    again = records["failed-kept"]
    assert (again.phase, again.retry_at, again.attempt) == ("Pending", None, None)
    assert records["failed-flying"].phase == "Pending", "its cordon comes off, then it retries"
    assert ledger == ["flying", "failed-flying", "failed-kept"], "cordons come off via the ledger"


# -- etcd --------------------------------------------------------------------------------------


def member(name: str, learner: bool = False) -> EtcdMember:
    return EtcdMember(id=hash(name) & 0xFFFF, hostname=name, is_learner=learner)


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([member("a"), member("b"), member("c")], None),
        ([member("a")], None),
        ([member("a"), member("b")], "2 members"),
        ([member("a"), member("b"), member("c", learner=True)], "c is a learner"),
        ([member("a"), member("b"), member("x")], "x has no matching control-plane node"),
    ],
)
def test_etcd_membership(members: list[EtcdMember], problem: str | None) -> None:
    found = etcd.membership_problem(members, {"a", "b", "c"})
    assert (found is None) == (problem is None)
    if problem is not None:
        assert problem in str(found)


def test_an_etcd_member_without_a_leader_or_with_errors_is_unhealthy() -> None:
    healthy = EtcdMemberStatus(member_id=1, leader=1, is_learner=False, errors=())
    leaderless = EtcdMemberStatus(member_id=1, leader=0, is_learner=False, errors=())
    erring = EtcdMemberStatus(member_id=1, leader=1, is_learner=False, errors=("NOSPACE",))
    assert etcd.member_problem(member("a"), healthy) is None
    assert "no leader" in str(etcd.member_problem(member("a"), leaderless))
    assert "NOSPACE" in str(etcd.member_problem(member("a"), erring))


# -- which pods a drain moves ------------------------------------------------------------------


def pod(**fields: object) -> PodView:
    base: dict[str, object] = {
        "namespace": "default",
        "name": "p",
        "daemon_set": False,
        "mirror": False,
        "terminating": False,
        "finished": False,
        "labels": {"app": "web"},
        "empty_dir": False,
    }
    return PodView(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "policy", "leaves"),
    [
        ({}, {}, True),
        ({"mirror": True}, {}, False),
        ({"finished": True}, {}, False),
        ({"daemon_set": True}, {}, False),
        ({"daemon_set": True}, {"ignoreDaemonSets": False}, True),
        ({"name": "nodeos-0", "namespace": "nodeos-system"}, {}, False),
        ({}, {"podSelector": {"matchLabels": {"app": "db"}}}, False),
        ({}, {"podSelector": {"matchLabels": {"app": "web"}}}, True),
    ],
)
def test_must_leave(fields: dict[str, object], policy: dict[str, object], leaves: bool) -> None:
    own = ("nodeos-system", "nodeos-0")
    assert must_leave(pod(**fields), DrainPolicy.model_validate(policy), own) is leaves


# -- the plan a NodeOSConfig owns ----------------------------------------------------------------

SPEC = {"target": {"version": NEW}}


@pytest.mark.parametrize(
    ("current", "drifting", "action", "phase"),
    [
        (None, False, "Keep", None),
        (None, True, "Apply", "Pending"),
        ({"spec": SPEC, "status": {"phase": "Completed"}}, False, "Delete", "Completed"),
        ({"spec": SPEC, "status": {"phase": "Progressing"}}, False, "Keep", "Progressing"),
        ({"spec": SPEC, "status": {"phase": "Progressing"}}, True, "Apply", "Progressing"),
        ({"spec": SPEC, "status": {"phase": "Completed"}}, True, "Delete", "Completed"),
        (
            {"spec": {"target": {"version": OLD}}, "status": {"phase": "Completed"}},
            True,
            "Apply",
            "Completed",
        ),
    ],
)
def test_owned_plan(
    current: dict[str, object] | None, drifting: bool, action: str, phase: str | None
) -> None:
    assert rollout_action(current, SPEC, drifting=drifting) == (action, phase)
