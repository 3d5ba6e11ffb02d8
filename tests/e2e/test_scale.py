"""A 200-node rollout with a workload behind a PDB: correct at a size where state must scale.

Asserts correctness (the invariant monitor, every node on the target, one upgrade each, no
cordon left) and the shape of the state: the plan object stays small, each node carries its own
record, and the plan's routine Events are bounded. It prints its figures; timings are not
asserted (the benchmark measures those).

Part of ``make test`` (about 105 s on 2 cores); ``make scale`` runs it alone. The invariant
monitor places each install among the watched changes by resourceVersion, so a busy machine
delivering watch events late cannot make a breach out of a correct rollout.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from helpers.rollout_env import NEW, Env, assert_clean_finish, monitor, workload
from nodeos.core import events

pytestmark = [pytest.mark.sandbox]

CONTROL_PLANES, WORKERS, PODS_PER_WORKER, MAX_UNAVAILABLE = 3, 197, 2, 20


def test_200_nodes_with_a_workload_roll_within_the_budget_and_the_state_stays_small(
    env_factory: Any, figures: list[str]
) -> None:
    env: Env = env_factory(
        "--control-planes", str(CONTROL_PLANES), "--workers", str(WORKERS), "--reboot-seconds", "1"
    )
    nodes = [f"cp-{i}" for i in range(1, CONTROL_PLANES + 1)]
    nodes += [f"worker-{i}" for i in range(1, WORKERS + 1)]
    replicas = WORKERS * PODS_PER_WORKER
    workload(env, replicas=replicas, min_available=replicas - 20, selector={"type": "kwok"})
    requests_before = _metric(env.op.metrics(), "nodeos_kube_requests_total")
    with monitor(env, nodes, MAX_UNAVAILABLE) as watch:
        started = time.monotonic()
        env.apply_plan("scale", strategy={"maxUnavailable": MAX_UNAVAILABLE})
        env.wait_phase("scale", "Completed", 600)
        elapsed = time.monotonic() - started
    assert watch.violations == [], watch.violations[:5]
    checked = watch.calls_checked("install")
    assert checked == len(nodes), f"the monitor checked {checked} installs of {len(nodes)}"
    assert_clean_finish(env, "scale", nodes)
    records = env.records("scale")
    assert {r["phase"] for r in records.values()} == {"Done"} and len(records) == len(nodes)
    plan = env.plan("scale")
    size = len(json.dumps(plan, separators=(",", ":")))
    assert size < 32 * 1024, f"the plan object is {size} bytes: it must not grow with the fleet"
    assert "nodes" not in plan["status"]
    on_plan = [e for e in env.events("scale") if "->" in e]
    bound = events.BURST + elapsed / events.REFILL_S + 5
    assert len(on_plan) <= bound, f"{len(on_plan)} node Events on the plan (bound {bound:.0f})"
    suppressed = _metric(env.op.metrics(), "nodeos_events_suppressed_total")
    requests = _metric(env.op.metrics(), "nodeos_kube_requests_total") - requests_before
    figures.append(
        f"200-node rollout ({CONTROL_PLANES} CP + {WORKERS} workers, {replicas} pods behind a "
        f"PDB, maxUnavailable {MAX_UNAVAILABLE}, 1 s reboots): {elapsed:.1f}s; plan object "
        f"{size / 1024:.1f} KiB; {len(on_plan)} node Events on the plan, {suppressed:.0f} left "
        f"to the Nodes; {requests / len(nodes):.1f} engine requests per node; peak "
        f"{watch.peak_unavailable} out of service; {checked} installs checked by the "
        f"monitor; every node on {NEW}"
    )


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )
