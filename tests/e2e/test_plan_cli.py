"""`nodeos plan …` against the sandbox: preview a file, follow a plan, approve its canary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.e2e import wait_for
from helpers.rollout_env import Env

pytestmark = pytest.mark.sandbox
REPO = Path(__file__).resolve().parents[2]


def nodeos_plan(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = env.op.sandbox.kubeconfig
    return subprocess.run(
        [sys.executable, "-m", "nodeos", "plan", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_preview_of_the_production_example_prints_its_batches(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "1", "--workers", "4", "--reboot-seconds", "1")
    names = ["cp-1", "worker-1", "worker-2", "worker-3", "worker-4"]
    for name in names:
        env.core.patch_node(name, {"metadata": {"labels": {"cluster.example.com/pool": "general"}}})
    result = nodeos_plan(env, "preview", str(REPO / "examples/upgradeplan-production.yaml"))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "UpgradePlan prod-talos-v1.13.9: 5 node(s) selected, 0 already on v1.13.9" in text
    assert "batch   1: cp-1" in text, "the control plane first, alone"
    assert "batch   2: worker-1" in text
    assert "canary: the first 1 node(s) alone, then a soak of 30m" in text
    assert "health check (Both): CephCluster rook-ceph" in text
    assert "prometheus gate: http://prometheus-operated.monitoring:9090" in text
    assert "maintenance window:" in text
    assert "estimate:" in text
    assert (
        env.custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans")["items"]
        == []
    ), "a preview applies nothing"


def test_a_canary_is_followed_and_approved_from_the_command_line(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "3", "--reboot-seconds", "1")
    env.apply_plan(
        "canaried", strategy={"maxUnavailable": 2, "canary": {"count": 1, "pauseAfter": True}}
    )
    wait_for(
        "the canary to wait for approval",
        lambda: "nodeos.dev/approve=true" in str(env.plan("canaried").get("status")),
        60,
    )
    status = nodeos_plan(env, "status", "canaried")
    assert status.returncode == 0, status.stderr
    assert "canaried: Waiting" in status.stdout
    assert "1/3 done" in status.stdout
    assert "worker-1" in status.stdout and "Done" in status.stdout
    assert env.upgrade_calls()["worker-2"] == 0, "held after the canary"
    approved = nodeos_plan(env, "approve", "canaried")
    assert approved.returncode == 0, approved.stderr
    env.wait_phase("canaried", "Completed", 90)
    conditions = {c["type"]: c for c in env.plan("canaried")["status"]["conditions"]}
    assert conditions["CanaryComplete"]["reason"] == "CanaryApproved"
    assert "nodeos.dev/approve" not in (env.plan("canaried")["metadata"].get("annotations") or {})
    assert env.plan("canaried")["spec"].get("paused") in (None, False), "spec never written"


def test_pause_and_resume_from_the_command_line(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "2", "--reboot-seconds", "1")
    env.apply_plan("steered", paused=True)
    env.wait_phase("steered", "Paused", 60)
    resumed = nodeos_plan(env, "resume", "steered")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    env.wait_phase("steered", "Completed", 60)
    paused = nodeos_plan(env, "pause", "steered")
    assert paused.returncode == 0, paused.stderr
    assert env.plan("steered")["spec"]["paused"] is True
    missing = nodeos_plan(env, "status", "no-such-plan")
    assert missing.returncode == 1 and "no-such-plan" in missing.stderr
