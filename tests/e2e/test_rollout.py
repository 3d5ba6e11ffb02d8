"""Full rollouts: operator process + sandbox + simulator, with the invariants watched throughout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from helpers.e2e import Partition, is_ready, wait_for
from helpers.rollout_env import (
    CP,
    NEW,
    OLD,
    WORKERS,
    Env,
    assert_clean_finish,
    monitor,
    workload,
)
from nodeos.sandbox import cluster, kwok
from nodeos.simulator.fleet import read_journal

pytestmark = pytest.mark.sandbox


def test_mixed_fleet_rolls_control_plane_first_then_workers_two_at_a_time(
    env_factory: Any, figures: list[str]
) -> None:
    env: Env = env_factory("--reboot-seconds", "2")
    workload(env, replicas=10, min_available=8, selector={"type": "kwok"})
    with monitor(env, CP + WORKERS, 2) as watch:
        started = time.monotonic()
        env.apply_plan("mixed", strategy={"maxUnavailable": 2})
        env.wait_phase("mixed", "Completed", 180)
        elapsed = time.monotonic() - started
    assert watch.violations == [], watch.violations[:5]
    assert watch.events["Node"] > 30 and watch.events["UpgradePlan"] > 10, watch.events
    assert watch.peak_unavailable == 2, "workers went two at a time"
    assert_clean_finish(env, "mixed", CP + WORKERS)
    records = env.records("mixed")
    last_cp_done = max(records[n]["since"] for n in CP)
    assert all(records[w]["since"] > last_cp_done for w in WORKERS)
    events = env.events("mixed")
    assert any("worker-3: Uncordoning -> Done" in e for e in events)
    node_uid = env.node("worker-3").metadata.uid
    node_events = env.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.uid={node_uid}"
    ).items
    assert any("Uncordoning -> Done" in e.message for e in node_events), (
        "node events carry the Node's UID, so kubectl describe node shows them"
    )
    figures.append(
        f"8-node rollout (3 CP + 5 workers, maxUnavailable 2, 2 s reboots): {elapsed:.1f}s"
    )


KILL_POINTS = (
    {"Rebooting"},
    {"Cordoning", "Draining", "Upgrading"},
    {"Verifying", "Uncordoning", "Rebooting"},
    {"Rebooting"},
)


def test_operator_killed_mid_rollout_resumes_without_breaking_invariants(
    env_factory: Any,
) -> None:
    kill_at = KILL_POINTS
    env: Env = env_factory("--reboot-seconds", "3")
    workload(env, replicas=6, min_available=5, selector={"type": "kwok"})
    with monitor(env, CP + WORKERS, 2, takeovers=True) as watch:
        env.apply_plan("crashy", strategy={"maxUnavailable": 2})
        for phases in kill_at:
            wait_for(
                f"a node in {sorted(phases)}",
                lambda p=phases: any(r["phase"] in p for r in env.records("crashy").values()),
                120,
                interval_s=0.05,
            )
            env.op.kill()
            time.sleep(1.0)
            env.op.start()
        env.wait_phase("crashy", "Completed", 240)
    assert watch.violations == [], watch.violations[:5]
    assert watch.events["Node"] > 30 and watch.events["Pod"] > 5, watch.events
    assert_clean_finish(env, "crashy", CP + WORKERS)
    assert env.op.starts == 1 + len(kill_at)


def test_drain_blocked_by_a_pdb_fails_the_node_at_the_timeout_without_rebooting(
    env_factory: Any,
) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "2", "--reboot-seconds", "1")
    workload(env, replicas=1, min_available=1, selector={"kubernetes.io/hostname": "worker-1"})
    env.apply_plan(
        "blocked",
        drain={"timeout": "4s", "onTimeout": "Fail"},
        failurePolicy={"retries": 0, "maxFailures": 0},
    )
    plan = env.wait_phase("blocked", "Failed", 60)
    record = env.records("blocked")["worker-1"]
    assert record["phase"] == "Failed"
    assert record["reason"] == "DrainTimeout"
    assert "would violate the pod's disruption budget" in record["message"]
    assert "not rebooting" in record["message"]
    assert env.upgrade_calls()["worker-1"] == 0, "no reboot after a failed drain"
    assert env.node("worker-1").status.node_info.os_image == f"Talos ({OLD})"
    assert env.node("worker-1").spec.unschedulable, "kept cordoned and reported, not silent"
    assert "FailureBudgetExhausted" in str(plan["status"]["conditions"])
    assert any("NodeFailedDrainTimeout" in e for e in env.events("blocked"))


def test_a_pod_bound_just_after_the_cordon_is_evicted_before_the_reboot(env_factory: Any) -> None:
    """The scheduler binds asynchronously; a pod it placed just before the cordon lands after."""
    env: Env = env_factory("--control-planes", "0", "--workers", "1", "--reboot-seconds", "1")
    waiting = {
        "metadata": {"name": "waiting"},
        "spec": {
            "nodeSelector": {"pool": "none-yet"},  # pending: the scheduler has a pod to place
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }
    env.core.create_namespaced_pod(env.namespace, waiting)
    # 8 s: the round's "checking again" is a message-only change, staged and written with the
    # node's next record or within 5 s; the drain must still be waiting when the test sees it
    env.apply_plan("late", drain={"settle": "8s"})

    def found_empty() -> bool:
        record = env.records("late").get("worker-1") or {}
        return record.get("phase") == "Draining" and "checking again" in record.get("message", "")

    wait_for("a drain round that found worker-1 empty", found_empty, 30, 0.05)
    late = {
        "metadata": {"name": "late", "labels": {"app": "late"}},
        "spec": {
            "nodeName": "worker-1",  # what a bind for an earlier scheduling decision writes
            "tolerations": [kwok.FAKE_NODE_TOLERATION],
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }
    env.core.create_namespaced_pod(env.namespace, late)
    assert env.records("late")["worker-1"]["phase"] == "Draining", (
        "the pod must land before the drain ends for this test to mean anything"
    )
    env.wait_phase("late", "Completed", 60)
    assert_clean_finish(env, "late", ["worker-1"])
    left = [p.metadata.name for p in env.core.list_namespaced_pod(env.namespace).items]
    assert left == ["waiting"], "the late pod was evicted"


def test_with_nothing_waiting_to_be_scheduled_an_empty_node_is_not_held(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "1", "--reboot-seconds", "1")
    env.apply_plan("quick", drain={"settle": "1h"})
    env.wait_phase("quick", "Completed", 60)
    assert_clean_finish(env, "quick", ["worker-1"])


def test_drain_timeout_can_skip_the_remaining_pods(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "1", "--reboot-seconds", "3")
    workload(env, replicas=1, min_available=1, selector={"kubernetes.io/hostname": "worker-1"})
    env.apply_plan("skip", drain={"timeout": "3s", "onTimeout": "SkipRemaining"})

    def web_ready() -> bool:
        (pod,) = env.core.list_namespaced_pod(env.namespace, label_selector="app=web").items
        return is_ready(pod)

    wait_for("the unevicted pod NotReady while its node reboots", lambda: not web_ready(), 30)
    env.wait_phase("skip", "Completed", 60)
    assert_clean_finish(env, "skip", ["worker-1"])
    wait_for("the pod restarted after the reboot", web_ready, 30)


def test_faulty_nodes_are_reported_and_handled_per_failure_policy(env_factory: Any) -> None:
    env: Env = env_factory(
        "--control-planes",
        "0",
        "--workers",
        "5",
        "--reboot-seconds",
        "1",
        "--fault",
        "worker-1=install-fails=3",
        "--fault",
        "worker-2=never-returns",
        "--fault",
        "worker-3=boot-fallback",
        "--fault",
        # a node with only the legacy Upgrade: acked, then its install fails after the reply
        "worker-5=legacy-only,install-fails=2",
    )
    env.apply_plan(
        "faults",
        strategy={"maxUnavailable": 5},
        failurePolicy={
            "retries": 0,
            "maxFailures": 4,
            "nodeTimeout": "15s",
            "uncordonOnFailure": True,
        },
    )
    plan = env.wait_phase("faults", "Completed", 90)
    records = env.records("faults")
    assert records["worker-1"]["reason"] == "InstallFailed"
    assert "installer exited with code 3" in records["worker-1"]["message"]
    assert records["worker-2"]["reason"] == "NeverReturned"
    assert records["worker-3"]["reason"] == "BootFallback"
    assert f"came back on {OLD}, not {NEW}" in records["worker-3"]["message"]
    assert records["worker-4"]["phase"] == "Done"
    assert records["worker-5"]["reason"] == "NotRebooted", records["worker-5"]
    assert "never rebooted" in records["worker-5"]["message"]
    assert env.node("worker-5").status.node_info.os_image == f"Talos ({OLD})"
    assert plan["status"]["counts"]["failed"] == 4
    assert "Degraded" in str(plan["status"]["conditions"])
    for name in ("worker-1", "worker-3", "worker-5"):
        assert not env.node(name).spec.unschedulable, "uncordonOnFailure uncordoned it"
    calls = env.upgrade_calls()
    assert calls["worker-2"] == 1
    assert calls["worker-3"] == 1
    assert calls["worker-5"] == 1, "acked once; never sent again"


def test_a_node_cordoned_by_someone_else_blocks_a_budget_of_one_and_says_so(
    env_factory: Any,
) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "2", "--reboot-seconds", "1")
    env.core.patch_node("worker-2", {"spec": {"unschedulable": True}})
    env.apply_plan("budget-one")
    env.wait_phase("budget-one", "Waiting", 60)
    message = env.plan("budget-one")["status"]["message"]
    assert "already unavailable: worker-2" in message
    assert env.upgrade_calls()["worker-1"] == 0


def test_a_node_cordoned_beforehand_stays_cordoned(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "3", "--reboot-seconds", "1")
    env.core.patch_node("worker-2", {"spec": {"unschedulable": True}})
    # worker-2 spends one of the two slots for the whole rollout: one more node at a time.
    with monitor(env, WORKERS[:3], 2) as watch:
        env.apply_plan("precordoned", strategy={"maxUnavailable": 2})
        env.wait_phase("precordoned", "Completed", 90)
    assert watch.violations == []
    assert watch.peak_unavailable == 1
    assert env.node("worker-2").spec.unschedulable, "someone else's cordon is kept"
    assert not env.node("worker-1").spec.unschedulable
    assert env.node("worker-2").status.node_info.os_image == f"Talos ({NEW})"
    assert env.upgrade_calls()["worker-2"] == 1


def test_a_standby_replica_takes_over_when_the_leader_dies(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "1", "--workers", "4", "--reboot-seconds", "3")
    env.op.start("op-b")  # a second replica: only one of the two may act

    def leaders() -> list[str]:
        return [
            name
            for name, child in env.op.replicas.items()
            if "holding the lease" in child.log.read_text()
        ]

    # A lease left by an earlier, killed operator expires first; either replica may win it.
    wait_for("a leader", lambda: len(leaders()) == 1, 60)
    (leader,) = leaders()
    standby = next(name for name in env.op.replicas if name != leader)
    with monitor(env, ["cp-1", *WORKERS[:4]], 1, takeovers=True) as watch:
        env.apply_plan("takeover")
        wait_for(
            "a worker rebooting",
            lambda: any(
                r["phase"] == "Rebooting" and r["name"].startswith("worker")
                for r in env.records("takeover").values()
            ),
            90,
        )
        assert leaders() == [leader], "one active writer"
        env.op.kill(leader)
        env.wait_phase("takeover", "Completed", 150)
    assert watch.violations == []
    assert watch.events["Node"] > 10, watch.events
    assert "holding the lease" in env.op.replicas[standby].log.read_text()
    assert_clean_finish(env, "takeover", ["cp-1", *WORKERS[:4]])


def test_an_overlapping_plan_queues_until_the_first_one_finishes(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "2", "--reboot-seconds", "2")
    env.apply_plan("first")
    wait_for("the first plan to start", lambda: env.phase("first") == "Progressing", 30)
    time.sleep(1.1)  # creationTimestamp has a one-second resolution
    env.apply_plan("second", target={"version": "v1.14.0"})
    wait_for("the second plan to queue", lambda: env.phase("second") == "Queued", 30)
    assert "UpgradePlan first" in env.plan("second")["status"]["message"]
    assert env.upgrade_calls()["worker-1"] <= 1, "only the first plan touches nodes"
    env.wait_phase("first", "Completed", 60)
    env.wait_phase("second", "Completed", 90)
    assert env.node("worker-1").status.node_info.os_image == "Talos (v1.14.0)"
    assert env.upgrade_calls() == {"worker-1": 2, "worker-2": 2}


def test_a_leader_cut_off_from_the_api_server_stops_before_the_standby_acts(
    env_factory: Any, sandbox: cluster.Sandbox, tmp_path: Path
) -> None:
    """Not killed: partitioned. It can still reach the nodes, so it must stop on its own,
    before the standby's first OS API call (design.md, invariant 8)."""
    env: Env = env_factory("--control-planes", "0", "--workers", "6", "--reboot-seconds", "4")
    env.op.stop()  # the default replica: this test runs its own pair
    partition = Partition(sandbox.kubeconfig, tmp_path)
    try:
        cut_off = env.op.start("cut-off", kubeconfig=partition.kubeconfig)
        wait_for("cut-off to lead", lambda: "holding the lease" in cut_off.log.read_text(), 60)
        standby = env.op.start("standby", talosconfig=env.sim.workdir / "talosconfig-spare")
        wait_for("the standby", lambda: "waiting for the lease" in standby.log.read_text(), 30)
        with monitor(env, [*WORKERS[:5], "worker-6"], 2, takeovers=True) as watch:
            env.apply_plan("partitioned", strategy={"maxUnavailable": 2})
            wait_for(
                "a node rebooting",
                lambda: any(r["phase"] == "Rebooting" for r in env.records("partitioned").values()),
                60,
            )
            partition.cut()
            assert cut_off.process is not None
            wait_for("cut-off to exit", lambda: cut_off.process.poll() is not None, 30)  # type: ignore[union-attr]
            exited_after = time.time() - partition.cut_at  # type: ignore[operator]
            env.wait_phase("partitioned", "Completed", 180)
    finally:
        partition.close()
    assert cut_off.process.returncode == 1, processes_log(cut_off)
    assert watch.violations == [], watch.violations[:5]
    assert "holding the lease" in standby.log.read_text()
    calls = read_journal(env.sim.workdir / "calls.jsonl")
    old = [c.at for c in calls if c.client == "nodeos-client"]
    new = [c.at for c in calls if c.client == "nodeos-client-spare"]
    assert old and new, "both replicas acted, one after the other"
    assert max(old) < min(new), (
        f"the old leader called at {max(old):.2f}, after the new one's first {min(new):.2f}"
    )
    assert_clean_finish(env, "partitioned", [*WORKERS[:5], "worker-6"])
    assert exited_after < 10 + 4 + 5, "renew deadline, then at most 4 s to exit (plus polling)"


def processes_log(child: Any) -> str:
    return str(child.log.read_text()[-3000:])
