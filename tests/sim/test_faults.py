"""The engine under faults: a fixed set of seeds, and one scenario per bug the campaign found.

Every test runs the real PlanRollout on the simulation (virtual time, modelled cluster, the
invariant checker on every journal entry). Each regression test is named after what broke and
failed on the engine as it was before its fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sim.campaign import run as run_seeds
from sim.ports import FaultRates
from sim.scenario import Report, Scenario, _Driver, generate, simulate
from sim.world import NEW, NEWER, OLD, Budget, Entry, World

CI_SEEDS = 120


@pytest.fixture(autouse=True)
def _quiet_engine() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def scenario(
    *,
    workers: int = 2,
    control_planes: int = 0,
    apps: list[tuple[str, int, int]] | None = None,
    rates: FaultRates | None = None,
    faults: dict[str, str] | None = None,
    actions: list[tuple[float, str, str]] | None = None,
    reboot_s: float = 10.0,
    rival: tuple[float, str, dict[str, Any]] | None = None,
    **spec: Any,
) -> Scenario:
    names = [f"cp-{i}" for i in range(control_planes)] + [f"w-{i}" for i in range(workers)]
    body: dict[str, Any] = {
        "target": {"version": NEW},
        "nodeSelector": {"matchLabels": {"pool": "sim"}},
        "strategy": {"maxUnavailable": 1},
        "drain": {"timeout": "2m", "onTimeout": "Fail", "settle": "2s"},
        "failurePolicy": {"nodeTimeout": "10m", "retries": 0, "maxFailures": 0},
    }
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return Scenario(
        seed=0,
        control_planes=control_planes,
        workers=workers,
        apps=apps or [],
        spec=body,
        rates=rates or FaultRates(),
        kills=[],
        actions=actions or [],
        node_faults=faults or {},
        reboot_s=dict.fromkeys(names, reboot_s),
        rival=rival,
    )


def rival_spec(target: str, *nodes: str) -> dict[str, Any]:
    """A second plan over ``nodes``."""
    return {
        "target": {"version": target},
        "nodeSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": list(nodes)}
            ]
        },
        "strategy": {"maxUnavailable": 2},
        "drain": {"timeout": "2m", "onTimeout": "Fail", "settle": "2s"},
        "failurePolicy": {"nodeTimeout": "10m", "retries": 0, "maxFailures": 0},
    }


def journal(report: Report, kind: str, node: str) -> list[str]:
    return [line for line in report.trace if line.split()[1:3] == [kind, node]]


def assert_clean(report: Report) -> None:
    assert report.ok, report.explain()


def record_in(phase: str, node: str) -> Callable[[World, Entry], bool]:
    def cue(world: World, entry: Entry) -> bool:
        record = world.records().get(node) or {}
        return entry.kind == "record" and entry.node == node and record.get("phase") == phase

    return cue


def entry_is(kind: str, node: str) -> Callable[[World, Entry], bool]:
    return lambda world, entry: entry.kind == kind and entry.node == node


# -- the campaign ----------------------------------------------------------------------------


def test_every_invariant_holds_over_the_ci_seeds(figures: list[str]) -> None:
    reports = run_seeds(0, CI_SEEDS, progress=False)
    failing = [r for r in reports if not r.ok]
    phases = sorted({r.phase for r in reports})
    figures.append(
        f"fault campaign: {CI_SEEDS} seeds, {len(failing)} with violations, "
        f"{sum(r.virtual_s for r in reports) / 3600:.1f} h simulated in "
        f"{sum(r.wall_s for r in reports):.1f} s, end phases {phases}"
    )
    assert not failing, "\n\n".join(r.explain() for r in failing[:3])
    assert {"Completed", "Failed"} <= set(phases)  # the seeds reach both ends
    assert sum(r.incarnations for r in reports) > CI_SEEDS  # and kill the engine


def test_a_seed_replays_exactly() -> None:
    first, again = simulate(generate(7)), simulate(generate(7))
    assert first.trace == again.trace
    assert first.violations == again.violations


def test_the_checker_catches_a_broken_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The net has holes if a known-bad engine passes: cordon past the budget and see it."""
    from nodeos.core import planner

    monkeypatch.setattr(planner, "max_unavailable", lambda value, total: 99)
    monkeypatch.setattr(planner, "still_fits", lambda *args: None)
    report = simulate(scenario(workers=4, apps=[("a", 8, 7)]))
    assert any("maxUnavailable 1" in v for v in report.violations), report.violations


# -- issue 10, item 1: a second install or reboot in one attempt -------------------------------


def test_a_refused_reboot_after_a_good_install_does_not_install_again() -> None:
    rates = FaultRates(script={("reboot", "w-0"): ["fail"]})
    report = simulate(scenario(rates=rates))
    assert_clean(report)
    assert len(journal(report, "install", "w-0")) == 1
    assert len(journal(report, "reboot", "w-0")) == 1


def test_an_install_whose_reply_is_lost_is_not_sent_again() -> None:
    rates = FaultRates(script={("install", "w-0"): ["lost"]})
    report = simulate(scenario(rates=rates))
    assert_clean(report)
    assert len(journal(report, "install", "w-0")) == 1
    assert report.phase == "Completed"


def test_a_restart_right_after_the_reboot_call_does_not_reboot_again() -> None:
    def configure(driver: _Driver) -> None:
        driver.kill_when(entry_is("reboot", "w-0"))

    report = simulate(scenario(), configure)
    assert_clean(report)
    assert len(journal(report, "reboot", "w-0")) == 1
    assert report.incarnations == 2


# -- item 2: a spec edit is lost ---------------------------------------------------------------


def test_a_target_changed_while_a_node_is_in_flight_rolls_every_node_to_the_new_one() -> None:
    def configure(driver: _Driver) -> None:
        def retarget() -> None:
            driver.world.edit_spec(lambda s: s["target"].update(version=NEWER), "target")

        driver.when(entry_is("install", "w-0"), retarget)

    report = simulate(scenario(), configure)
    assert_clean(report)
    assert report.phase == "Completed"
    assert "BootFallback" not in "\n".join(report.trace)


def test_a_target_changed_during_a_status_write_is_not_lost() -> None:
    def configure(driver: _Driver) -> None:
        def retarget() -> None:
            driver.world.edit_spec(lambda s: s["target"].update(version=NEWER), "target")

        def claims_the_last_node(world: World, entry: Entry) -> bool:
            return entry.kind == "status" and "w-2" in (world.status().get("inFlight") or [])

        # inside the status write that claims the last node, before the step's summary
        driver.when(claims_the_last_node, retarget, at_once=True)

    report = simulate(scenario(workers=3), configure)
    assert_clean(report)  # the checker: Completed means every node on the target
    assert report.phase == "Completed"


# -- item 3: deadlines that never fire ---------------------------------------------------------


def test_an_unreachable_os_api_fails_the_node_at_its_deadline_instead_of_holding_its_slot() -> None:
    rates = FaultRates(osapi_outages={"w-0": [(0.0, 1e9)]})
    report = simulate(
        scenario(rates=rates, failurePolicy={"nodeTimeout": "2m", "maxFailures": 1}), None
    )
    assert_clean(report)
    assert report.phase == "Completed"
    assert report.record("w-0")["reason"] == "Timeout"
    assert "Cordoning" in report.record("w-0")["message"]


def test_kubernetes_errors_during_a_drain_reach_the_drain_deadline() -> None:
    rates = FaultRates(script={("pods_on", "w-0"): ["fail"] * 10_000})
    policy = {"maxFailures": 1, "uncordonOnFailure": True}
    report = simulate(scenario(rates=rates, failurePolicy=policy))
    assert_clean(report)
    assert report.phase == "Completed"  # w-0 failed with a reason, w-1 went on
    assert report.record("w-0")["reason"] == "Timeout"
    assert "Kubernetes API" in report.record("w-0")["message"]
    assert len(journal(report, "install", "w-0")) == 0


def test_a_pod_under_two_budgets_blocks_the_drain_until_its_deadline_not_for_ever() -> None:
    def configure(driver: _Driver) -> None:
        driver.world.budgets.append(Budget("pdb-extra", ("a",), 0))

    policy = {"maxFailures": 2, "uncordonOnFailure": True}
    report = simulate(scenario(apps=[("a", 4, 0)], failurePolicy=policy), configure)
    assert_clean(report)
    assert report.phase == "Completed"
    assert report.record("w-0")["reason"] == "DrainTimeout"
    assert "more than one PodDisruptionBudget" in report.record("w-0")["message"]
    assert journal(report, "install", "w-0") == []


def test_a_node_waiting_for_its_retry_is_not_left_cordoned_when_the_plan_pauses() -> None:
    def configure(driver: _Driver) -> None:
        def pause() -> None:
            driver.world.edit_spec(lambda s: s.update(paused=True), "paused")

        driver.when(record_in("Pending", "w-0"), pause)

    report = simulate(
        scenario(
            apps=[("a", 2, 2)],
            drain={"timeout": "30s"},
            failurePolicy={"retries": 2, "retryBackoff": "10m"},
        ),
        configure,
    )
    assert_clean(report)  # the checker: no cordon of ours outside the ledger at the end
    assert report.phase == "Paused"
    assert journal(report, "uncordon", "w-0")


# -- item 4: settings that did nothing ---------------------------------------------------------


def test_rollback_true_rolls_an_unhealthy_node_back_and_verifies_the_old_version() -> None:
    report = simulate(
        scenario(
            faults={"w-0": "sick-on-new"},
            failurePolicy={"rollback": True, "maxFailures": 1, "nodeTimeout": "5m"},
        )
    )
    assert_clean(report)
    assert len(journal(report, "rollback", "w-0")) == 1
    assert journal(report, "boot", "w-0")[-1].split()[-1] == OLD
    assert report.record("w-0")["phase"] == "RolledBack"


@pytest.mark.parametrize("require", [True, False])
def test_require_healthy_etcd_decides_whether_an_unhealthy_etcd_holds_control_planes(
    require: bool,
) -> None:
    report = simulate(
        scenario(
            control_planes=3,
            workers=1,
            actions=[(0.0, "etcd-unhealthy", "")],
            strategy={"controlPlane": {"requireHealthyEtcd": require}},
        )
    )
    assert_clean(report)
    assert report.phase == ("Waiting" if require else "Completed")


# -- item 8: a Ready left over from before a short reboot passed Verify -------------------------


def test_a_node_is_verified_only_once_its_kubelet_reports_the_new_boot() -> None:
    # 0.3 s reboots are over before the Node is ever seen NotReady; the kubelet posts its new
    # boot ID a little later. The checker flags an uncordon before that.
    report = simulate(scenario(workers=3, reboot_s=0.3))
    assert_clean(report)
    assert report.phase == "Completed"


# -- item 5: a plan deleted mid-rollout ----------------------------------------------------------


@pytest.mark.parametrize("kill_too", [False, True])
def test_deleting_a_plan_mid_rollout_leaves_no_cordon_and_no_later_action(kill_too: bool) -> None:
    def configure(driver: _Driver) -> None:
        driver.when(entry_is("cordon", "w-1"), lambda: driver._act("delete-plan", ""))
        if kill_too:  # the operator dies while the deletion handler runs; the next one redoes it
            driver.kill_when(lambda world, entry: entry.kind == "plan-deleting")

    report = simulate(
        scenario(workers=4, apps=[("a", 8, 6)], strategy={"maxUnavailable": 2}), configure
    )
    assert_clean(report)  # the checker: no effect after deletion, no cordon of ours left
    assert any("plan-deleted" in line for line in report.trace)


# -- bad input the engine meets after admission --------------------------------------------------


def test_a_spec_the_model_rejects_is_a_condition_naming_the_field_and_in_flight_nodes_finish() -> (
    None
):
    seen: dict[str, Any] = {}

    def configure(driver: _Driver) -> None:
        def break_spec() -> None:  # e.g. written for another nodeos version, past admission
            driver.world.edit_spec(lambda s: s["strategy"].update(maxUnavailable="lots"), "bad")

        def look_and_fix() -> None:
            conditions = driver.world.status().get("conditions") or []
            seen.update(next(c for c in conditions if c["type"] == "ReconcileError"))
            driver.world.edit_spec(lambda s: s["strategy"].update(maxUnavailable=1), "fixed")

        driver.when(entry_is("install", "w-0"), break_spec)
        driver.loop.call_later(300.0, look_and_fix)

    report = simulate(scenario(workers=3), configure)
    assert_clean(report)
    assert seen["status"] == "True"
    assert seen["reason"] == "InvalidSpec"
    assert seen["message"].startswith("spec.strategy.maxUnavailable")
    assert report.phase == "Completed"
    # w-0 was in flight when the spec broke and finished under the last valid spec
    assert report.record("w-0")["phase"] == "Done"


@pytest.mark.parametrize("replaced", [True, False])
def test_a_node_registered_again_after_done_is_judged_as_the_node_it_now_is(replaced: bool) -> None:
    """Regression (issue 10, item 8): a Done record outlived the Node it spoke of; a machine
    replaced under the same name stayed on the old OS in a Completed plan."""

    def configure(driver: _Driver) -> None:
        driver.when(record_in("Done", "w-0"), lambda: driver.world.reregister("w-0", replaced))

    report = simulate(scenario(workers=3), configure)
    assert_clean(report)  # the checker: Completed means every node on the target
    assert report.phase == "Completed"
    assert len(journal(report, "install", "w-0")) == (2 if replaced else 1)


def test_the_etcd_gate_sees_every_member_even_those_the_plan_does_not_select() -> None:
    """Found by the campaign once selector edits were modelled: a plan excluding one control
    plane found 'no matching control-plane node' for its member and waited for ever."""
    excluded = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["cp-2"]}
    report = simulate(
        scenario(control_planes=3, workers=2, nodeSelector={"matchExpressions": [excluded]})
    )
    assert_clean(report)
    assert report.phase == "Completed"
    assert journal(report, "install", "cp-2") == []


def test_seed_145_a_control_plane_dropped_from_the_selector_mid_reboot_still_holds_the_rest() -> (
    None
):
    def configure(driver: _Driver) -> None:
        excluded = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["cp-0"]}
        driver.when(
            entry_is("reboot", "cp-0"),
            lambda: driver.world.edit_spec(
                lambda s: s["nodeSelector"].update(matchExpressions=[excluded]), "selector"
            ),
        )

    report = simulate(
        scenario(control_planes=3, workers=1, strategy={"maxUnavailable": 3}), configure
    )
    assert_clean(report)  # the checker: never a control plane cordoned while another is out
    assert report.phase == "Completed"


def test_seed_976_a_lost_status_reply_never_lets_a_stale_transition_forget_our_cordon() -> None:
    """A write whose reply was lost left the engine's copy behind; the resumed worker's
    transition, computed from it, overwrote the newer record and forgot the cordon was ours,
    which a later spec edit then stranded. (Seed-based: the scenario generator as of this
    test; it is also in the CI seed range's neighbourhood.)"""
    assert_clean(simulate(generate(976)))


def test_seed_36_a_slot_given_back_and_claimed_again_in_one_write_stays_claimed() -> None:
    """A finished worker leaves its slot to the step's write; that step, after a long etcd
    check, claimed the same node again in that write and then gave the new claim back, so the
    node was cordoned with no slot in the ledger. (Seed-based: the generator as of this test.)"""
    assert_clean(simulate(generate(36)))


def test_seed_546_a_lost_reply_to_a_release_never_lets_a_reclaim_go_unwritten() -> None:
    """A worker's release was stored but its reply lost; the step then gave the slot back and
    claimed it again in one write, which compared with the stale copy changed nothing and was
    not written, so the node was cordoned with no slot in the stored ledger. (Seed-based: the
    generator and the engine's OS API calls as of this test.)"""
    assert_clean(simulate(generate(546)))


def test_seed_607_an_install_sent_while_cordoned_is_not_charged_for_an_uncordon_in_flight() -> None:
    """A person lifted their own cordon while the engine's install travelled; the engine then
    cordoned the node again before the reboot. (Seed-based, as above.)"""
    report = simulate(generate(607))
    assert_clean(report)
    assert any("human-uncordon w-5" in " ".join(line.split()) for line in report.trace)


# -- item 7: one error stopped the plan ------------------------------------------------------


def test_status_writes_that_fail_do_not_stop_the_plan() -> None:
    rates = FaultRates(script={("patch_plan_status", ""): ["fail", "fail", "lost", "fail"]})
    report = simulate(scenario(rates=rates))
    assert_clean(report)
    assert report.loop_errors == []
    assert report.phase == "Completed"


# -- item 9: a routine restart cost a node ---------------------------------------------------


def test_a_restart_with_the_node_in_upgrading_does_not_fail_it() -> None:
    def configure(driver: _Driver) -> None:
        driver.kill_when(record_in("Upgrading", "w-0"))

    report = simulate(scenario(failurePolicy={"retries": 0}), configure)
    assert_clean(report)
    assert report.phase == "Completed"
    assert report.record("w-0")["phase"] == "Done"
    assert len(journal(report, "install", "w-0")) <= 1


# -- from the user review ---------------------------------------------------------------------


def test_max_failures_zero_fails_the_plan_when_the_last_node_fails() -> None:
    report = simulate(scenario(faults={"w-1": "install-fails"}))
    assert_clean(report)
    assert report.phase == "Failed"
    assert report.record("w-1")["reason"] == "InstallFailed"


def test_a_finished_rollout_never_reports_pending_on_its_way_to_completed() -> None:
    report = simulate(scenario(workers=3, strategy={"maxUnavailable": 3}))
    assert_clean(report)  # the checker flags a status write of Pending after Progressing
    assert report.phase == "Completed"


# -- found by the campaign ---------------------------------------------------------------------


def test_seeds_605_665_a_node_uncordoned_by_someone_mid_upgrade_is_cordoned_and_drained_again() -> (
    None
):
    # a person cordons w-0 before we do (so the cordon is not ours), then lifts it mid-drain
    report = simulate(
        scenario(
            workers=3,
            apps=[("a", 6, 5)],
            actions=[(0.0, "human-cordon", "w-0"), (2.0, "human-uncordon", "w-0")],
        )
    )
    assert_clean(report)  # no install or reboot of an uncordoned node, no cordon left
    assert report.phase == "Completed"


def test_pods_that_land_on_a_node_uncordoned_mid_upgrade_are_drained_before_the_install() -> None:
    def configure(driver: _Driver) -> None:
        world = driver.world

        def uncordon_and_schedule() -> None:  # `kubectl uncordon`, and a pod lands at once
            world.record("human-uncordon", "w-0")
            world.nodes["w-0"].unschedulable = False
            world.record("uncordon", "w-0", "someone else")
            world._new_pod("a", "w-0", ready=True)

        driver.when(record_in("Upgrading", "w-0"), uncordon_and_schedule, at_once=True)

    report = simulate(scenario(workers=3, apps=[("a", 6, 4)]), configure)
    assert_clean(report)  # the checker: no install or reboot with pods still on the node
    assert report.phase == "Completed"


def test_seed_747_a_claimed_worker_waits_for_a_control_plane_sent_back_by_a_retry() -> None:
    report = simulate(
        scenario(
            control_planes=1,
            workers=2,
            faults={"cp-0": "install-fails"},
            rates=FaultRates(osapi_outages={"w-0": [(0.0, 200.0)]}),
            actions=[(100.0, "max-unavailable", "2")],
            strategy={"maxUnavailable": 2},
            failurePolicy={"maxFailures": 1, "uncordonOnFailure": True},
        )
    )
    assert_clean(report)  # the checker: no worker cordoned while a control plane is unfinished


def test_a_transient_error_at_the_drain_deadline_still_gets_the_forced_round() -> None:
    """Campaign seed 32, against an intermediate version of this change (Kubernetes errors had
    just become results): the error pre-empted onTimeout ForceDelete."""
    rates = FaultRates(script={("pods_on", "w-0"): ["ok"] * 3 + ["fail"] * 40})
    report = simulate(
        scenario(
            apps=[("a", 2, 2)], rates=rates, drain={"timeout": "30s", "onTimeout": "ForceDelete"}
        )
    )
    assert_clean(report)
    assert report.phase == "Completed"


def test_seed_287_a_lost_cordon_reply_then_a_failure_leaves_no_cordon() -> None:
    rates = FaultRates(
        script={("cordon", "w-0"): ["lost"], ("boot_id", "w-0"): ["ok", "permanent"]}
    )
    report = simulate(
        scenario(rates=rates, failurePolicy={"maxFailures": 1, "uncordonOnFailure": True})
    )
    assert_clean(report)


def test_seed_326_a_slot_claimed_before_others_went_out_is_given_back_not_cordoned() -> None:
    rates = FaultRates(osapi_outages={"w-0": [(0.0, 120.0)]})
    report = simulate(
        scenario(
            workers=3,
            rates=rates,
            actions=[(30.0, "human-cordon", "w-2"), (400.0, "human-uncordon", "w-2")],
        )
    )
    assert_clean(report)
    assert report.phase == "Completed"


# -- issue 10, item 6: two plans, one node ------------------------------------------------------


@pytest.mark.parametrize("seed", [37, 77, 83, 133, 169, 211])
def test_two_plans_never_act_on_one_node(seed: int) -> None:
    """Seeds where a second plan overlaps the first; before the per-node claim, one plan
    installed on or rebooted a node the other held. Seed 133 again once the status store got
    faster: a claim decided before the step's etcd check took a node that the other plan had
    claimed meanwhile (the claim now looks at the other plans as they are when it is written)."""
    drawn = generate(seed)
    assert drawn.rival is not None
    assert_clean(simulate(drawn))


def test_a_retried_failed_plan_waits_for_the_younger_plan_that_is_rolling() -> None:
    """The older plan failed; a younger one took its nodes; the older is retried meanwhile."""
    drawn = scenario(
        workers=3,
        faults={"w-0": "install-fails"},
        rival=(60.0, "2026-01-05T00:01:00Z", rival_spec(NEWER, "w-0", "w-1", "w-2")),
        actions=[],
    )
    queued: list[float] = []

    def configure(driver: _Driver) -> None:
        def rival_flying(world: World, entry: Entry) -> bool:
            return entry.kind == "cordon" and entry.detail == "rival-plan"

        driver.when(rival_flying, lambda: driver._act("retry", ""), at_once=True)

        def note(world: World, entry: Entry) -> None:
            if entry.kind == "status" and world.status().get("phase") == "Queued":
                queued.append(entry.at)

        driver.world.checks.append(note)

    report = simulate(drawn, configure)
    assert_clean(report)
    assert queued, "the retried plan should queue behind the one in flight"


def test_a_node_cordoned_by_another_plan_is_requeued_not_taken() -> None:
    """The index lags: the other plan's mark is found by the cordon call itself."""
    drawn = scenario(workers=3, strategy={"maxUnavailable": 2})

    def configure(driver: _Driver) -> None:
        def slot_claimed(world: World, entry: Entry) -> bool:
            return entry.kind == "status" and "w-0" in (world.status().get("inFlight") or [])

        def other_plan_cordons() -> None:
            # a younger plan, run by no engine here, whose worker won the race for w-0
            driver.world.add_plan("other", rival_spec(NEW, "w-0"), "2026-01-05T00:10:00Z")
            driver.world.cordon("w-0", "other")

        def other_plan_gone() -> None:
            driver.world.uncordon("w-0", "other")
            driver.world.others.pop("other")

        driver.when(slot_claimed, other_plan_cordons, at_once=True)
        driver.when(
            lambda world, entry: entry.kind == "reboot" and entry.node == "w-1", other_plan_gone
        )

    report = simulate(drawn, configure)
    assert_clean(report)
    assert any("Requeued" in line or "holds the node" in line for line in report.trace) or (
        journal(report, "install", "w-0")
    )
    first_install = next(i for i, line in enumerate(report.trace) if " install " in line)
    assert "w-1" in report.trace[first_install], "w-1 goes while w-0 is held"


# -- issue 12 (found moving the canary rule into core): the canary hold must survive GitOps ------


def test_a_canary_pause_holds_in_status_until_approved_and_never_writes_spec() -> None:
    """pauseAfter used to set spec.paused, which Argo CD's self-heal reverts."""
    drawn = scenario(
        workers=4,
        strategy={"maxUnavailable": 2, "canary": {"count": 1, "pauseAfter": True}},
    )
    held_at: list[float] = []

    def configure(driver: _Driver) -> None:
        def waiting_for_approval(world: World, entry: Entry) -> bool:
            status = world.status()
            waiting = [c for c in status.get("conditions") or [] if c.get("type") == "Waiting"]
            return entry.kind == "status" and any(
                c.get("reason") == "CanaryAwaitingApproval" and c.get("status") == "True"
                for c in waiting
            )

        def approve_later() -> None:
            held_at.append(driver.loop.time())
            driver.loop.call_later(600, driver._act, "approve", "")

        driver.when(waiting_for_approval, approve_later)

    report = simulate(drawn, configure)
    assert_clean(report)
    assert report.phase == "Completed"
    assert held_at, "the plan waited for approval"
    installs = [float(line.split()[0]) for line in report.trace if " install " in line]
    assert len(installs) == 4
    assert installs[0] < held_at[0] < held_at[0] + 600 <= installs[1]
    conditions = {c["type"]: c for c in report.status.get("conditions") or []}
    assert conditions["CanaryComplete"]["reason"] == "CanaryApproved"
    assert any("nodeos.dev/approve=None" in line for line in report.trace), "consumed"


def test_a_plan_deleted_mid_rollout_and_created_again_finishes_the_job() -> None:
    """The new object has the old name (so the old marks would look like its own): the
    deletion handler must have taken them off first, and nodes done before are not redone."""
    drawn = scenario(workers=4, actions=[(15.0, "delete-plan", ""), (20.0, "recreate-plan", "")])
    report = simulate(drawn)
    assert_clean(report)
    assert report.phase == "Completed"
    assert any("plan-recreated" in line for line in report.trace)
    for node in ("w-0", "w-1", "w-2", "w-3"):
        assert len(journal(report, "install", node)) <= 1, node


def test_retry_on_a_completed_plan_starts_its_failed_node_at_once() -> None:
    """Issue 10: the retry annotation on a Completed plan waited retryBackoff first."""
    drawn = scenario(
        workers=2,
        faults={"w-0": "install-fails"},
        failurePolicy={"maxFailures": 1, "retryBackoff": "10m", "uncordonOnFailure": True},
    )
    annotated: list[float] = []

    def configure(driver: _Driver) -> None:
        def completed(world: World, entry: Entry) -> bool:
            return entry.kind == "status" and world.status().get("phase") == "Completed"

        def fix_and_retry() -> None:
            driver.world.nodes["w-0"].install_fails = False
            annotated.append(driver.loop.time())
            driver._act("retry", "")

        driver.when(completed, fix_and_retry)

    report = simulate(drawn, configure)
    assert_clean(report)
    assert report.phase == "Completed"
    installs = [float(line.split()[0]) for line in journal(report, "install", "w-0")]
    assert len(installs) == 1 and installs[0] - annotated[0] < 10, (installs, annotated)
    assert report.record("w-0")["phase"] == "Done"


@pytest.mark.parametrize("seed", [1040, 1472])
def test_seeds_1040_1472_a_staged_change_overtaken_by_a_lost_reply_is_not_acted_on(
    seed: int,
) -> None:
    """A node failed in Verify (a 403), and the write of Failed landed with its reply lost; the
    staged Verifying before it went back to be written, and the worker resumed from it: it
    verified and uncordoned the node, writing Done on its Node, while the plan counted it
    failed. (Seed-based: the scenario generator as of this test.)"""
    assert_clean(simulate(generate(seed)))


def test_seed_154_a_cordon_judged_by_the_spec_as_it_is_at_the_cordon() -> None:
    """A worker's slot was claimed for the old target; the target changed while the cordon's OS
    API reads took seconds, which sent the control plane first again; the check before the
    cordon used the spec from the start of the worker's step and cordoned the worker ahead of
    the control plane. (Seed-based: the scenario generator as of this test; it showed once
    records carried by the cordon were taken without waiting for the writes ahead.)"""
    assert_clean(simulate(generate(154)))
