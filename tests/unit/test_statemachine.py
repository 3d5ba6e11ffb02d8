from __future__ import annotations

import datetime
from typing import Any

import pytest

from nodeos.core import statemachine as sm
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import NodeProgress

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(hours=2)
TARGET = "v1.13.9"


def ctx(**policy: Any) -> sm.Context:
    return sm.Context(target=TARGET, policy=RolloutPolicy.model_validate(policy))


def at(phase: str, **fields: Any) -> NodeProgress:
    return NodeProgress(name="w-1", phase=phase, since=NOW, started_at=NOW, **fields)


def test_happy_path_walks_every_phase() -> None:
    c = ctx()
    p = sm.start("w-1", None, NOW)
    steps = [
        sm.Result(boot_id="boot-a", version="v1.12.4", cordoned_by_us=True),
        sm.Result(remaining_pods=0),
        sm.Result(),
        sm.Result(boot_id="boot-b"),
        sm.Result(version=TARGET),
        sm.Result(),
    ]
    phases = [p.phase]
    clock = NOW
    for result in steps:
        clock += datetime.timedelta(seconds=5)
        action = sm.next_action(p, c, clock)
        p = sm.after(p, action, result, c, clock)
        phases.append(p.phase)
    assert phases == [
        "Cordoning",
        "Draining",
        "Upgrading",
        "Rebooting",
        "Verifying",
        "Uncordoning",
        "Done",
    ]
    assert p.to_api() == {
        "name": "w-1",
        "phase": "Done",
        "since": "2026-11-26T12:00:30Z",
        "fromVersion": "v1.12.4",
    }


@pytest.mark.parametrize(
    ("phase", "action"),
    [
        ("Cordoning", "Cordon"),
        ("Draining", "Drain"),
        ("Upgrading", "Install"),
        ("Rebooting", "AwaitReboot"),
        ("Verifying", "Verify"),
        ("Uncordoning", "Uncordon"),
        ("Soaking", "Soak"),
        ("Done", "None"),
    ],
)
def test_each_phase_has_one_action(phase: str, action: str) -> None:
    assert sm.next_action(at(phase), ctx(), NOW).kind == action


def test_drain_timeout_fails_without_reboot_by_default() -> None:
    c = ctx(failurePolicy={"retries": 0})
    p = at("Draining", deadline=NOW)
    result = sm.after(
        p, sm.next_action(p, c, LATER), sm.Result(remaining_pods=2, message="pdb"), c, LATER
    )
    assert result.phase == "Failed"
    assert result.reason == "DrainTimeout"
    assert "not rebooting" in (result.message or "")


def test_drain_before_timeout_keeps_waiting() -> None:
    p = at("Draining", deadline=LATER)
    result = sm.after(p, sm.Action("Drain"), sm.Result(remaining_pods=1, message="x"), ctx(), NOW)
    assert result.phase == "Draining"


def test_an_empty_round_soon_after_the_cordon_is_checked_again_while_binds_are_pending() -> None:
    c = ctx(drain={"settle": "2s"})
    p = at("Draining", deadline=LATER)
    empty = sm.Result(remaining_pods=0, binds_pending=True)
    early = sm.after(p, sm.Action("Drain"), empty, c, NOW + datetime.timedelta(seconds=1))
    assert early.phase == "Draining"
    assert "checking again" in (early.message or "")
    settled = NOW + datetime.timedelta(seconds=2)
    assert sm.after(early, sm.Action("Drain"), empty, c, settled).phase == "Upgrading"


@pytest.mark.parametrize(("settle", "binds_pending"), [("2s", False), ("0s", True), ("0s", False)])
def test_the_first_empty_round_counts_when_nothing_can_land_or_settle_is_off(
    settle: str, binds_pending: bool
) -> None:
    c = ctx(drain={"settle": settle})
    p = at("Draining", deadline=LATER)
    empty = sm.Result(remaining_pods=0, binds_pending=binds_pending)
    assert sm.after(p, sm.Action("Drain"), empty, c, NOW).phase == "Upgrading"


@pytest.mark.parametrize(
    ("on_timeout", "force", "phase"),
    [("SkipRemaining", False, "Upgrading"), ("ForceDelete", True, "Upgrading")],
)
def test_drain_timeout_actions(on_timeout: str, force: bool, phase: str) -> None:
    c = ctx(drain={"onTimeout": on_timeout})
    p = at("Draining", deadline=NOW)
    action = sm.next_action(p, c, LATER)
    assert action.force is force
    assert sm.after(p, action, sm.Result(remaining_pods=1), c, LATER).phase == phase


def test_failures_retry_with_backoff_then_fail() -> None:
    c = ctx(failurePolicy={"retries": 1, "retryBackoff": "1m"})
    p = at("Upgrading")
    failed_once = sm.after(
        p,
        sm.Action("Install"),
        sm.Result(ok=False, reason="InstallFailed", message="exit 3"),
        c,
        NOW,
    )
    assert failed_once.phase == "Pending"
    assert failed_once.attempt == 1
    assert failed_once.retry_at == NOW + datetime.timedelta(minutes=1)
    again = sm.after(
        at("Upgrading", attempt=1),
        sm.Action("Install"),
        sm.Result(ok=False, reason="InstallFailed"),
        c,
        NOW,
    )
    assert again.phase == "Failed"
    assert again.reason == "InstallFailed"


def test_resumed_install_never_installs_twice() -> None:
    c = sm.Context(target=TARGET, policy=RolloutPolicy(), is_resume=True)
    p = at("Upgrading", boot_id="boot-a")
    action = sm.next_action(p, c, NOW)
    assert action.resumed
    interrupted = sm.after(p, action, sm.Result(boot_id=None), c, NOW)
    assert interrupted.reason == "InstallInterrupted"
    rebooted = sm.after(p, action, sm.Result(boot_id="boot-b"), c, NOW)
    assert rebooted.phase == "Rebooting"


def test_reboot_outcomes() -> None:
    c = ctx(failurePolicy={"retries": 0})
    p = at("Rebooting", boot_id="boot-a", deadline=NOW + datetime.timedelta(minutes=30))
    waiting = sm.after(p, sm.Action("AwaitReboot"), sm.Result(transient=True), c, NOW)
    assert waiting.phase == "Rebooting"
    back = sm.after(p, sm.Action("AwaitReboot"), sm.Result(boot_id="boot-b"), c, NOW)
    assert back.phase == "Verifying"
    never = sm.after(
        p, sm.Action("AwaitReboot"), sm.Result(transient=True, message="refused"), c, LATER
    )
    assert never.reason == "NeverReturned"
    not_rebooted = sm.after(p, sm.Action("AwaitReboot"), sm.Result(boot_id="boot-a"), c, LATER)
    assert not_rebooted.reason == "NotRebooted"


def test_boot_fallback_is_a_failure_not_done() -> None:
    p = at("Verifying", deadline=LATER)
    result = sm.after(p, sm.Action("Verify"), sm.Result(version="v1.12.4"), ctx(), NOW)
    assert result.phase == "Failed"
    assert result.reason == "BootFallback"


def test_unhealthy_after_upgrade_rolls_back_when_allowed() -> None:
    c = ctx(failurePolicy={"retries": 0, "rollback": True})
    p = at("Verifying", deadline=NOW)
    result = sm.after(
        p,
        sm.Action("Verify"),
        sm.Result(version=TARGET, unhealthy=True, message="NotReady"),
        c,
        LATER,
    )
    assert result.reason == "RollingBack"
    assert sm.next_action(result, c, LATER).kind == "Rollback"
    assert sm.after(result, sm.Action("Rollback"), sm.Result(), c, LATER).phase == "RolledBack"


def test_soak_keeps_the_slot() -> None:
    c = ctx(strategy={"soakBetweenNodes": "5m"})
    soaking = sm.after(at("Uncordoning"), sm.Action("Uncordon"), sm.Result(), c, NOW)
    assert soaking.phase == "Soaking"
    assert soaking.deadline == NOW + datetime.timedelta(minutes=5)


def test_a_config_only_rollout_expects_the_version_the_node_had() -> None:
    c = sm.Context(target=None, policy=RolloutPolicy())
    p = at("Verifying", from_version="v1.12.4", deadline=LATER)
    assert sm.after(p, sm.Action("Verify"), sm.Result(version="v1.12.4"), c, NOW).phase == (
        "Uncordoning"
    )
    moved = sm.after(p, sm.Action("Verify"), sm.Result(version="v1.11.0"), c, NOW)
    assert moved.reason == "BootFallback"
