"""Seeded chaos on the real sandbox, with two operator replicas and the exact monitor watching.

Each seed draws a schedule of faults, injected while a rollout runs over one control plane and
five workers with a PodDisruptionBudget'd workload:

- SIGKILL the leader or the standby (restarted a moment later),
- restart kube-apiserver or etcd in place (same ports and data),
- cut one node's OS API off for a while (the node itself runs on),
- cordon a node by hand and uncordon it later, or uncordon a node the plan cordoned,
- edit the plan (maxUnavailable).

The rollout must end with every invariant held and every node on the target or failed with a
reason. ``make test`` runs seeds 1-3; ``make chaos SEEDS=N`` runs seeds 1..N.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from helpers.e2e import wait_for
from helpers.invariants import InvariantMonitor
from helpers.rollout_env import NEW, Env, workload
from nodeos.sandbox import cluster

pytestmark = pytest.mark.sandbox

SEEDS = [int(s) for s in os.environ.get("NODEOS_CHAOS_SEEDS", "1,2,3").split(",") if s]
NODES = ["cp-1", *(f"worker-{i}" for i in range(1, 6))]
FAULTS = (
    "kill-leader",
    "kill-standby",
    "restart-apiserver",
    "restart-etcd",
    "osapi-outage",
    "human-cordon",
    "human-uncordon-ours",
    "edit-plan",
)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the plan is applied
    kind: str
    node: str = ""
    seconds: float = 0.0


def schedule(seed: int) -> list[Fault]:
    """Five to seven faults in the first 30 s (the rollout's span), drawn from the seed."""
    rng = random.Random(seed)
    faults = []
    for _ in range(rng.randint(5, 7)):
        kind = rng.choice(FAULTS)
        faults.append(
            Fault(
                at=round(rng.uniform(1, 30), 1),
                kind=kind,
                node=rng.choice(NODES[1:]),
                seconds=round(rng.uniform(3, 15), 1),
            )
        )
    return sorted(faults, key=lambda f: f.at)


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos(seed: int, env_factory: Any, sandbox: cluster.Sandbox, figures: list[str]) -> None:
    env: Env = env_factory("--control-planes", "1", "--workers", "5", "--reboot-seconds", "3")
    env.op.start("op-b", talosconfig=env.sim.workdir / "talosconfig-spare")
    workload(env, replicas=6, min_available=4, selector={"type": "kwok"})
    faults = schedule(seed)
    done: list[str] = []
    with InvariantMonitor(
        env.kube,
        set(NODES),
        2,
        journal=env.sim.workdir / "calls.jsonl",
        target=NEW,
        installs_per_node=2,  # one retry allowed: each attempt installs at most once
        reboots_per_node=3,  # and a takeover mid-install adds one checking reboot
        gaps_allowed=True,
        others_cordon=True,
        namespaces={env.namespace},
    ) as watch:
        env.apply_plan(
            "chaos",
            strategy={"maxUnavailable": 2},
            drain={"timeout": "60s"},
            failurePolicy={
                "nodeTimeout": "3m",
                "retries": 1,
                "retryBackoff": "5s",
                "maxFailures": 6,
            },
        )
        started = time.monotonic()
        for fault in faults:
            while time.monotonic() < started + fault.at:
                revive(env)
                time.sleep(0.2)
            done.append(inject(env, sandbox, fault))
        undo_human_cordons(env)

        def ended() -> bool:
            revive(env)
            status = env.plan("chaos").get("status") or {}
            return status.get("phase") in ("Completed", "Failed") and not status.get("inFlight")

        try:
            wait_for("the plan to end", ended, 300, interval_s=0.5)
        except AssertionError:
            raise AssertionError(
                f"seed {seed}: {done}\nstatus: {env.plan('chaos').get('status')}\n{env.op.logs()}"
            ) from None
    status = env.plan("chaos")["status"]
    figures.append(
        f"chaos seed {seed}: {len(done)} faults ({', '.join(done)}), {watch.samples} events "
        f"checked, {len(watch.gaps)} watch gaps, {len(watch.violations)} violations, "
        f"plan {status['phase']} {status.get('message', '')}"
    )
    assert watch.violations == [], f"seed {seed}: {done}\n{watch.violations[:5]}"
    assert watch.samples > 50
    records = env.records("chaos")
    for name in NODES:
        node = env.node(name)
        record = records.get(name, {})
        upgraded = node.status.node_info.os_image == f"Talos ({NEW})"
        assert upgraded or (record.get("phase") == "Failed" and record.get("reason")), (
            f"seed {seed}: {name} neither on {NEW} nor failed with a reason: {record}; {done}"
        )
        ours = (node.metadata.annotations or {}).get("nodeos.dev/cordoned-by") == "chaos"
        assert not ours or record.get("phase") == "Failed", f"{name} left cordoned: {record}"


def inject(env: Env, sandbox: cluster.Sandbox, fault: Fault) -> str:
    """Performs one fault; returns how it went, for the report."""
    match fault.kind:
        case "kill-leader" | "kill-standby":
            leader = lease_holder(env)
            names = list(env.op.replicas)
            victim = (
                leader
                if fault.kind == "kill-leader"
                else next((n for n in names if n != leader), None)
            )
            if victim is None or not env.op.replicas[victim].alive():
                return f"{fault.kind}: none"
            env.op.kill(victim)
            time.sleep(1.0)
            revive(env)
            return f"{fault.kind} {victim}@{fault.at}s"
        case "restart-apiserver":
            took = sandbox.restart("kube-apiserver")
            return f"apiserver restarted@{fault.at}s ({took:.1f}s)"
        case "restart-etcd":
            took = sandbox.restart("etcd")
            return f"etcd restarted@{fault.at}s ({took:.1f}s)"
        case "osapi-outage":
            path = env.sim.workdir / "outages.json"
            outages = json.loads(path.read_text()) if path.exists() else {}
            outages[fault.node] = time.time() + fault.seconds
            path.write_text(json.dumps(outages))
            return f"OS API of {fault.node} cut for {fault.seconds}s@{fault.at}s"
        case "human-cordon":
            node = env.node(fault.node)
            if node.spec.unschedulable:
                return f"human-cordon {fault.node}: already cordoned"
            env.core.patch_node(
                fault.node,
                {
                    "metadata": {"labels": {"chaos/cordoned": "yes"}},
                    "spec": {"unschedulable": True},
                },
            )
            return f"human-cordon {fault.node}@{fault.at}s"
        case "human-uncordon-ours":
            for name in NODES:
                annotations = env.node(name).metadata.annotations or {}
                if annotations.get("nodeos.dev/cordoned-by") == "chaos":
                    env.core.patch_node(name, {"spec": {"unschedulable": False}})
                    return f"human-uncordon of our {name}@{fault.at}s"
            return "human-uncordon-ours: none cordoned"
        case "edit-plan":
            value = 1 if fault.seconds < 9 else 2
            env.custom.patch_cluster_custom_object(
                "nodeos.dev",
                "v1alpha1",
                "upgradeplans",
                "chaos",
                {"spec": {"strategy": {"maxUnavailable": value}}},
            )
            return f"maxUnavailable={value}@{fault.at}s"
        case _:
            raise AssertionError(fault.kind)


def revive(env: Env) -> None:
    """What the kubelet does for a crashed operator pod: start it again."""
    for name, child in list(env.op.replicas.items()):
        if not child.alive():
            spare = env.sim.workdir / "talosconfig-spare"
            env.op.start(name, talosconfig=spare if name == "op-b" else env.sim.talosconfig)


def undo_human_cordons(env: Env) -> None:
    """The person who cordoned a node by hand uncordons it, so the rollout can finish."""
    for node in env.core.list_node(label_selector="chaos/cordoned=yes").items:
        env.core.patch_node(
            node.metadata.name,
            {"metadata": {"labels": {"chaos/cordoned": None}}, "spec": {"unschedulable": False}},
        )


def lease_holder(env: Env) -> str | None:
    from kubernetes import client

    lease = client.CoordinationV1Api(env.kube).read_namespaced_lease(
        "nodeos-operator", "nodeos-system"
    )
    return lease.spec.holder_identity if lease.spec else None
