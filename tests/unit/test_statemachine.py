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
    return sm.Context(policy=RolloutPolicy.model_validate(policy))


def at(phase: str, **fields: Any) -> NodeProgress:
    fields.setdefault("target", TARGET)
    return NodeProgress(name="w-1", phase=phase, since=NOW, started_at=NOW, **fields)


def test_happy_path_walks_every_phase() -> None:
    c = ctx()
    p = sm.start("w-1", None, TARGET, c.policy, NOW)
    steps = [
        sm.Result(boot_id="boot-a", version="v1.12.4", cordoned_by_us=True),
        sm.Result(remaining_pods=0),
        sm.Result(),  # Install
        sm.Result(boot_id="boot-a", reboot_requested=True),  # Reboot
        sm.Result(boot_id="boot-b"),  # AwaitReboot
        sm.Result(version=TARGET),
        sm.Result(),
    ]
    seen = [(p.phase, "")]
    clock = NOW
    for result in steps:
        clock += datetime.timedelta(seconds=5)
        action = sm.next_action(p, c, clock)
        p = sm.after(p, action, result, c, clock)
        seen.append((p.phase, action.kind))
    assert seen == [
        ("Cordoning", ""),
        ("Draining", "Cordon"),
        ("Upgrading", "Drain"),
        ("Rebooting", "Install"),
        ("Rebooting", "Reboot"),
        ("Verifying", "AwaitReboot"),
        ("Uncordoning", "Verify"),
        ("Done", "Uncordon"),
    ]
    assert p.to_api() == {
        "name": "w-1",
        "phase": "Done",
        "since": "2026-11-26T12:00:35Z",
        "fromVersion": "v1.12.4",
        "target": TARGET,
    }


@pytest.mark.parametrize(
    ("phase", "fields", "action"),
    [
        ("Cordoning", {}, "Cordon"),
        ("Draining", {}, "Drain"),
        ("Upgrading", {}, "Install"),
        ("Rebooting", {}, "Reboot"),
        ("Rebooting", {"reboot_requested_at": NOW}, "AwaitReboot"),
        ("Verifying", {}, "Verify"),
        ("Uncordoning", {}, "Uncordon"),
        ("Soaking", {}, "Soak"),
        ("RollingBack", {}, "Rollback"),
        ("RollingBack", {"reboot_requested_at": NOW}, "AwaitReboot"),
        ("Pending", {"cordoned_by_us": True}, "Uncordon"),
        ("Pending", {"cordoned_by_us": False}, "None"),
        ("Pending", {}, "Uncordon"),  # unknown: a lost cordon reply may have marked it
        ("Failed", {"cordoned_by_us": True}, "None"),  # kept cordoned unless policy says
        ("Done", {}, "None"),
    ],
)
def test_each_phase_has_one_action(phase: str, fields: dict[str, Any], action: str) -> None:
    assert sm.next_action(at(phase, **fields), ctx(), NOW).kind == action


def test_every_attempt_starts_with_a_deadline() -> None:
    """Regression (issue 10, item 3): Cordoning had no deadline; an unreachable OS API held
    the slot for ever."""
    c = ctx(failurePolicy={"nodeTimeout": "10m", "retries": 0})
    p = sm.start("w-1", None, TARGET, c.policy, NOW)
    assert p.deadline == NOW + datetime.timedelta(minutes=10)
    stuck = sm.after(p, sm.Action("Cordon"), sm.Result(transient=True, message="refused"), c, LATER)
    assert (stuck.phase, stuck.reason) == ("Failed", "Timeout")
    assert "refused" in (stuck.message or "")


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


def test_an_api_error_at_the_drain_deadline_still_gets_the_forced_round() -> None:
    """Found by the simulation (seed 32): a transient error as the drain deadline passed
    failed the node with Timeout; onTimeout ForceDelete never ran."""
    c = ctx(drain={"onTimeout": "ForceDelete"}, failurePolicy={"retries": 0})
    p = at("Draining", deadline=NOW)
    soon = NOW + datetime.timedelta(seconds=1)
    kept = sm.after(p, sm.Action("Drain"), sm.Result(transient=True), c, soon)
    assert kept.phase == "Draining"
    assert sm.next_action(kept, c, soon).force


def test_a_round_that_ends_after_the_drain_deadline_is_followed_by_the_forced_round() -> None:
    """Found by the fault campaign once Events were sent after claiming: a round begun before
    the deadline and judged after it failed the node DrainTimeout instead of forcing."""
    c = ctx(drain={"onTimeout": "ForceDelete"}, failurePolicy={"retries": 0})
    p = at("Draining", deadline=NOW)
    late = NOW + datetime.timedelta(seconds=1)
    blocked = sm.Result(remaining_pods=1, message="PDB")
    kept = sm.after(p, sm.Action("Drain"), blocked, c, late)
    assert kept.phase == "Draining"
    assert sm.next_action(kept, c, late).force
    failed = sm.after(p, sm.Action("Drain"), blocked, ctx(failurePolicy={"retries": 0}), late)
    assert (failed.phase, failed.reason) == ("Failed", "DrainTimeout"), "onTimeout Fail fails"


def test_an_empty_round_soon_after_the_cordon_is_checked_again_while_binds_are_pending() -> None:
    c = ctx(drain={"settle": "2s"})
    p = at("Draining", deadline=LATER)
    empty = sm.Result(remaining_pods=0, binds_pending=True)
    early = sm.after(p, sm.Action("Drain"), empty, c, NOW + datetime.timedelta(seconds=1))
    assert early.phase == "Draining"
    assert "checking again" in (early.message or "")
    settled = NOW + datetime.timedelta(seconds=2)
    assert sm.after(early, sm.Action("Drain"), empty, c, settled).phase == "Upgrading"


def test_an_empty_round_is_judged_by_when_it_listed_not_when_its_slow_answer_came() -> None:
    c = ctx(drain={"settle": "2s"})
    p = at("Draining", deadline=LATER)
    listed_early = sm.Result(
        remaining_pods=0, binds_pending=True, listed_at=NOW + datetime.timedelta(seconds=1)
    )
    late = NOW + datetime.timedelta(seconds=5)  # the pending check took 4 s (fault seed 393)
    assert sm.after(p, sm.Action("Drain"), listed_early, c, late).phase == "Draining"


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


def test_a_retry_gives_back_our_cordon_before_its_slot() -> None:
    """Regression (issue 10, item 3): a node sent back to Pending stayed cordoned outside any
    slot, indefinitely if the plan paused."""
    c = ctx(failurePolicy={"retries": 2})
    failed = sm.after(
        at("Draining", deadline=NOW, cordoned_by_us=True),
        sm.Action("Drain"),
        sm.Result(remaining_pods=1),
        c,
        LATER,
    )
    assert (failed.phase, failed.cordoned_by_us) == ("Pending", True)
    assert sm.next_action(failed, c, LATER).kind == "Uncordon"
    released = sm.after(failed, sm.Action("Uncordon"), sm.Result(), c, LATER)
    assert released.cordoned_by_us is False
    assert sm.next_action(released, c, LATER).kind == "None"
    unanswered = sm.after(failed, sm.Action("Uncordon"), sm.Result(transient=True), c, LATER)
    assert unanswered == failed


def test_a_failed_reboot_call_never_installs_again() -> None:
    """Regression (issue 10, item 1): Reboot answering UNAVAILABLE once after a successful
    install made the worker install again."""
    c = ctx()
    installed = sm.after(
        at("Upgrading", boot_id="boot-a"), sm.Action("Install"), sm.Result(), c, NOW
    )
    assert installed.phase == "Rebooting"
    refused = sm.after(installed, sm.Action("Reboot"), sm.Result(transient=True), c, NOW)
    assert refused.phase == "Rebooting"
    assert sm.next_action(refused, c, NOW).kind == "Reboot"


def test_an_install_whose_reply_was_lost_is_rebooted_and_checked_not_sent_again() -> None:
    """Regression (issue 10, item 1): an install past its gRPC deadline was sent again."""
    c = ctx(failurePolicy={"retries": 0})
    p = at("Upgrading", boot_id="boot-a", attempt=None)
    lost = sm.after(p, sm.Action("Install"), sm.Result(unconfirmed=True), c, NOW)
    assert (lost.phase, lost.unconfirmed) == ("Rebooting", True)
    verifying = at("Verifying", boot_id="boot-a", unconfirmed=True, deadline=LATER)
    old = sm.after(verifying, sm.Action("Verify"), sm.Result(version="v1.12.4"), c, NOW)
    # not the node's fault: a new attempt even with retries 0, and it says why
    assert (old.phase, old.reason, old.attempt, old.interrupted) == (
        "Pending",
        "InstallNotConfirmed",
        1,
        1,
    )
    assert old.retry_at == NOW
    good = sm.after(verifying, sm.Action("Verify"), sm.Result(version=TARGET), c, NOW)
    assert good.phase == "Uncordoning"


def test_unconfirmed_installs_stop_being_free_after_a_few() -> None:
    c = ctx(failurePolicy={"retries": 0})
    p = at("Verifying", unconfirmed=True, attempt=3, interrupted=sm.MAX_INTERRUPTIONS)
    assert sm.after(p, sm.Action("Verify"), sm.Result(version="v1.12.4"), c, NOW).phase == (
        "Failed"
    )


def test_a_restart_in_upgrading_reboots_and_checks_instead_of_failing_the_node() -> None:
    """Regression (issue 10, item 9): a restart right after Upgrading was persisted failed the
    node InstallInterrupted, costing a node per helm upgrade of the operator."""
    p = at("Upgrading", boot_id="boot-a")
    taken_up = sm.resume(p, NOW)
    assert (taken_up.phase, taken_up.unconfirmed, taken_up.reboot_requested_at) == (
        "Rebooting",
        True,
        None,
    )
    assert sm.next_action(taken_up, ctx(), NOW).kind == "Reboot"
    assert sm.resume(at("Draining"), NOW) == at("Draining")


def test_reboot_outcomes() -> None:
    c = ctx(failurePolicy={"retries": 0})
    p = at(
        "Rebooting",
        boot_id="boot-a",
        deadline=NOW + datetime.timedelta(minutes=30),
        reboot_requested_at=NOW,
    )
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


def test_a_reboot_step_that_finds_a_new_boot_moves_on_without_rebooting() -> None:
    """A restart between the Reboot call and persisting it: the node came back meanwhile."""
    p = at("Rebooting", boot_id="boot-a")
    moved = sm.after(p, sm.Action("Reboot"), sm.Result(boot_id="boot-b"), ctx(), NOW)
    assert moved.phase == "Verifying"


def test_boot_fallback_is_a_failure_not_done() -> None:
    p = at("Verifying", deadline=LATER)
    result = sm.after(p, sm.Action("Verify"), sm.Result(version="v1.12.4"), ctx(), NOW)
    assert result.phase == "Failed"
    assert result.reason == "BootFallback"


def test_verify_compares_with_the_attempts_own_target() -> None:
    """Regression (issue 10, item 2): changing spec.target while a node was in flight made
    Verify compare with the new target and fail it BootFallback."""
    p = at("Verifying", target="v1.13.9", deadline=LATER)
    assert sm.after(p, sm.Action("Verify"), sm.Result(version="v1.13.9"), ctx(), NOW).phase == (
        "Uncordoning"
    )


def test_unhealthy_after_upgrade_rolls_back_and_verifies_the_old_version() -> None:
    """Regression (issue 10, item 4): rollback: true never called Rollback."""
    c = ctx(failurePolicy={"retries": 0, "rollback": True})
    p = at("Verifying", deadline=NOW, boot_id="boot-a", from_version="v1.12.4")
    sick = sm.Result(version=TARGET, unhealthy=True, message="NotReady", boot_id="boot-b")
    rolling = sm.after(p, sm.Action("Verify"), sick, c, LATER)
    assert (rolling.phase, rolling.boot_id) == ("RollingBack", "boot-b")
    assert rolling.deadline is not None
    assert sm.next_action(rolling, c, LATER).kind == "Rollback"
    asked = sm.after(
        rolling, sm.Action("Rollback"), sm.Result(boot_id="boot-b", reboot_requested=True), c, LATER
    )
    assert sm.next_action(asked, c, LATER).kind == "AwaitReboot"
    back = sm.after(
        asked, sm.Action("AwaitReboot"), sm.Result(boot_id="boot-c", version="v1.12.4"), c, LATER
    )
    assert (back.phase, back.reason) == ("RolledBack", "RolledBack")
    wrong = sm.after(
        asked, sm.Action("AwaitReboot"), sm.Result(boot_id="boot-c", version=TARGET), c, LATER
    )
    assert (wrong.phase, wrong.reason) == ("Failed", "RollbackFailed")


def test_soak_keeps_the_slot_until_its_deadline() -> None:
    c = ctx(strategy={"soakBetweenNodes": "5m"})
    soaking = sm.after(at("Uncordoning"), sm.Action("Uncordon"), sm.Result(), c, NOW)
    assert soaking.phase == "Soaking"
    assert soaking.deadline == NOW + datetime.timedelta(minutes=5)
    assert sm.after(soaking, sm.Action("Soak"), sm.Result(), c, NOW) == soaking
    assert sm.after(soaking, sm.Action("Soak"), sm.Result(), c, LATER).phase == "Done"


def test_a_config_only_rollout_expects_the_version_the_node_had() -> None:
    p = at("Verifying", target=None, from_version="v1.12.4", deadline=LATER)
    assert sm.after(p, sm.Action("Verify"), sm.Result(version="v1.12.4"), ctx(), NOW).phase == (
        "Uncordoning"
    )
    moved = sm.after(p, sm.Action("Verify"), sm.Result(version="v1.11.0"), ctx(), NOW)
    assert moved.reason == "BootFallback"


def test_only_changes_a_restart_repeats_by_itself_may_be_deferred() -> None:
    def record(phase: str, **fields: Any) -> NodeProgress:
        return NodeProgress(name="n", phase=phase, **fields)  # type: ignore[arg-type]

    assert sm.deferrable(record("Draining", message="1 pod left"), record("Draining", message="0"))
    assert sm.deferrable(record("Rebooting", boot_id="b"), record("Verifying", boot_id="b"))
    assert sm.deferrable(record("Verifying"), record("Uncordoning"))
    # what was done to the node is stored before the next action
    assert not sm.deferrable(record("Cordoning"), record("Draining", cordoned_by_us=True))
    assert not sm.deferrable(record("Draining"), record("Upgrading"))
    # installed: a resumed worker takes Upgrading as possibly installed, so this rides on the
    # reboot's write; an install that rebooted by itself asked for the reboot: stored
    assert sm.deferrable(record("Upgrading"), record("Rebooting"))
    assert sm.resume(record("Upgrading"), NOW).unconfirmed, "a lost one reboots, never reinstalls"
    assert not sm.deferrable(record("Upgrading"), record("Rebooting", reboot_requested_at=NOW))
    assert not sm.deferrable(record("Uncordoning"), record("Done"))
    assert not sm.deferrable(record("Draining"), record("Draining", redrain=True))
    assert not sm.deferrable(record("Rebooting"), record("Failed", reason="NeverReturned"))


def test_a_refused_uncordon_of_a_failed_node_keeps_the_cordon_ours_and_says_so() -> None:
    c = ctx(failurePolicy={"uncordonOnFailure": True})
    failed = at("Failed", reason="InstallFailed", message="exit 1", cordoned_by_us=True)
    assert sm.next_action(failed, c, NOW).kind == "Uncordon"
    refused = sm.Result(ok=False, reason="KubernetesApi", message="HTTP 403: forbidden")
    once = sm.after(failed, sm.Action("Uncordon"), refused, c, NOW)
    assert once.cordoned_by_us is True, "the slot is not given back with our cordon on"
    assert once.message == "exit 1; our cordon is still on, lifting it failed: HTTP 403: forbidden"
    twice = sm.after(once, sm.Action("Uncordon"), refused, c, NOW)
    assert twice == once, "the message does not grow"
    lifted = sm.after(twice, sm.Action("Uncordon"), sm.Result(), c, NOW)
    assert lifted.cordoned_by_us is False
