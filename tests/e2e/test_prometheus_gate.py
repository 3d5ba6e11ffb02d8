"""The production example on the sandbox, with its gates real, and the chart's alert rules.

``examples/upgradeplan-production.yaml`` is applied adapted to the sandbox: its node selector,
a CEL health check on a Probe (a CRD installed for the test, standing for its CephCluster),
a real Prometheus (built from its Go module like the sandbox) with a rule making
``GateClosed`` fire while a target the test controls says 1, a maintenance window that is
open, and seconds where the example waits minutes. It rolls; when the alert fires
mid-rollout, no node starts until it resolves. Then promtool checks and unit-tests the
chart's PrometheusRule.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from helpers.e2e import wait_for
from helpers.gates import PROBE_GROUP, GateTarget, probes, prometheus_process
from helpers.rollout_env import NEW, Env

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
NODES = ["cp-1", *(f"worker-{i}" for i in range(1, 5))]
GATE_RULES = {
    "groups": [
        {
            "name": "test",
            "rules": [{"alert": "GateClosed", "expr": "nodeos_test_gate == 1"}],
        }
    ]
}


def production_example(prometheus_url: str) -> dict[str, Any]:
    """The example, adapted to the sandbox's nodes, objects, Prometheus and time scale."""
    plan = yaml.safe_load((REPO / "examples/upgradeplan-production.yaml").read_text())
    spec = plan["spec"]
    spec["nodeSelector"] = {"matchLabels": {"type": "kwok"}}
    spec["strategy"]["canary"]["soak"] = "2s"
    spec["strategy"]["soakBetweenNodes"] = "0s"
    check = spec["healthChecks"][0]
    check.update(
        apiVersion=f"{PROBE_GROUP}/v1",
        kind="Probe",
        namespace="default",
        name="ceph",
        expression="object.spec.state == 'ok'",
    )
    spec["prometheus"]["url"] = prometheus_url
    spec["maintenanceWindows"] = [
        {"schedule": "0 * * * *", "duration": "61m", "timeZone": "Europe/Berlin"}
    ]
    spec["drain"]["gracePeriod"] = "1s"
    return plan


def started(env: Env, name: str) -> set[str]:
    """Nodes the plan has started (any record past Pending, or in flight)."""
    plan = env.plan(name)
    status = plan.get("status") or {}
    begun = {
        r["name"]
        for r in env.records(name).values()
        if r.get("phase") != "Pending" and r.get("reason") != "AlreadyUpToDate"
    }
    return begun | set(status.get("inFlight") or [])


def waiting(env: Env, name: str) -> dict[str, Any]:
    conditions = {c["type"]: c for c in env.plan(name)["status"].get("conditions") or []}
    return dict(conditions.get("Waiting") or {})


def test_the_production_example_rolls_and_a_firing_alert_holds_it(
    env_factory: Any,
    sandbox_binaries: dict[str, Path],
    kube: client.ApiClient,
    tmp_path: Path,
    figures: list[str],
) -> None:
    env: Env = env_factory("--control-planes", "1", "--workers", "4", "--reboot-seconds", "2")
    target = GateTarget()
    operator = f"127.0.0.1:{env.op.metrics_ports['op-a']}"
    with (
        probes(kube, "ceph"),
        prometheus_process(
            sandbox_binaries,
            tmp_path / "prometheus",
            {"gate": target.address, "nodeos": operator},
            GATE_RULES,
        ) as prom,
    ):
        try:
            wait_for(
                "Prometheus to scrape the operator",
                lambda: prom.api("query", query='nodeos_leader{job="nodeos"} == 1')["result"],
                30,
            )
            plan = production_example(prom.url)
            name = plan["metadata"]["name"]
            env.custom.create_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", plan)
            wait_for("the canary to start", lambda: started(env, name), 60)
            target.value = 1
            wait_for("the alert to fire", lambda: "GateClosed" in prom.firing(), 30)
            fired = time.monotonic()
            wait_for(
                "the plan to hold on the alert",
                lambda: waiting(env, name).get("reason") == "AlertsFiring",
                60,
            )
            held_after = time.monotonic() - fired
            before = started(env, name)
            time.sleep(5)  # many reconciles while it fires
            assert started(env, name) == before, "a node started while the alert fired"
            assert waiting(env, name)["message"] == "1 alert(s) firing: GateClosed"
            assert len(before) < len(NODES), "the alert fired too late to hold anything"
            target.value = 0
            wait_for("the alert to resolve", lambda: "GateClosed" not in prom.firing(), 30)
            env.wait_phase(name, "Completed", 180)
        finally:
            target.close()
    for node in NODES:
        assert env.node(node).status.node_info.os_image == f"Talos ({NEW})"
    figures.append(
        f"production example: held {held_after:.1f}s after the alert fired, "
        f"{len(before)} of {len(NODES)} node(s) started before it; completed"
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
