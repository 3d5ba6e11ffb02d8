"""The Prometheus gate against a real Prometheus, and the chart's alert rules under promtool.

Prometheus (built from its Go module like the sandbox) scrapes the operator's metrics and a
target the test controls; a rule makes ``GateClosed`` fire while that target says 1. The alert
fires mid-rollout: no node starts while it fires, and the rollout goes on once it resolves.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.e2e import wait_for
from helpers.prometheus import GateTarget, prometheus_process
from helpers.rollout_env import NEW, Env

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
GATE_RULES = {
    "groups": [
        {
            "name": "test",
            "rules": [{"alert": "GateClosed", "expr": "nodeos_test_gate == 1"}],
        }
    ]
}


def started(plan: dict[str, Any]) -> set[str]:
    """Nodes the plan has started (any record past Pending, or in flight)."""
    status = plan.get("status") or {}
    records = status.get("nodes") or []
    return {
        r["name"]
        for r in records
        if r.get("phase") != "Pending" and r.get("reason") != "AlreadyUpToDate"
    } | set(status.get("inFlight") or [])


def test_a_firing_alert_holds_new_starts_until_it_resolves(
    env_factory: Any, sandbox_binaries: dict[str, Path], tmp_path: Path, figures: list[str]
) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "4", "--reboot-seconds", "2")
    target = GateTarget()
    operator = f"127.0.0.1:{env.op.metrics_ports['op-a']}"
    try:
        with prometheus_process(
            sandbox_binaries,
            tmp_path / "prometheus",
            {"gate": target.address, "nodeos": operator},
            GATE_RULES,
        ) as prom:
            wait_for(
                "Prometheus to scrape the operator",
                lambda: prom.api("query", query='nodeos_leader{job="nodeos"} == 1')["result"],
                30,
            )
            env.apply_plan(
                "gated",
                strategy={"maxUnavailable": 1},
                prometheus={
                    "url": prom.url,
                    "alerts": {"match": "Gate.*", "ignore": "Watchdog"},
                },
            )
            wait_for("a first node to start", lambda: started(env.plan("gated")), 60)
            target.value = 1
            wait_for("the alert to fire", lambda: "GateClosed" in prom.firing(), 30)
            fired = time.monotonic()

            def holding() -> bool:
                conditions = {c["type"]: c for c in env.plan("gated")["status"]["conditions"]}
                return conditions["Waiting"].get("reason") == "AlertsFiring"

            wait_for("the plan to hold on the alert", holding, 60)
            held_at = time.monotonic()
            before = started(env.plan("gated"))
            time.sleep(5)  # many reconciles while it fires
            assert started(env.plan("gated")) == before, "a node started while the alert fired"
            assert holding()
            message = {c["type"]: c for c in env.plan("gated")["status"]["conditions"]}["Waiting"][
                "message"
            ]
            assert message == "1 alert(s) firing: GateClosed", message
            assert len(before) < 4, "the alert fired too late to hold anything"
            target.value = 0
            wait_for("the alert to resolve", lambda: "GateClosed" not in prom.firing(), 30)
            env.wait_phase("gated", "Completed", 120)
    finally:
        target.close()
    for name in (f"worker-{i}" for i in range(1, 5)):
        assert env.node(name).status.node_info.os_image == f"Talos ({NEW})"
    figures.append(
        f"prometheus gate: plan held {held_at - fired:.1f}s after the alert fired; "
        f"{len(before)} of 4 node(s) started before it"
    )


def test_the_charts_alert_rules_pass_promtool(
    sandbox_binaries: dict[str, Path], tmp_path: Path
) -> None:
    rendered = subprocess.run(
        [
            str(sandbox_binaries["helm"]),
            "template",
            "nodeos",
            str(REPO / "charts/nodeos"),
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rule = yaml.safe_load(rendered)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    tests = tmp_path / "rules-test.yaml"
    tests.write_text((REPO / "tests/fixtures/prometheus/rules-test.yaml").read_text())
    promtool = str(sandbox_binaries["promtool"])
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules-test.yaml"]):
        result = subprocess.run(
            [promtool, *args], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    tested = (REPO / "tests/fixtures/prometheus/rules-test.yaml").read_text()
    assert all(f"alertname: {a}" in tested for a in alerts), "every alert has a promtool test"
