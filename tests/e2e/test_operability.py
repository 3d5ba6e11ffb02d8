"""What people see: a rollout told by its log, no metric outliving its plan, Events counted."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from kubernetes import client

from helpers.e2e import wait_for
from helpers.rollout_env import Env
from nodeos.adapters.kube import KubeClient
from nodeos.core.records import annotation_key

pytestmark = pytest.mark.sandbox


def test_a_rollout_with_failures_can_be_followed_from_json_logs(env_factory: Any) -> None:
    env: Env = env_factory(
        "--control-planes",
        "0",
        "--workers",
        "3",
        "--reboot-seconds",
        "1",
        "--fault",
        "worker-2=install-fails=3",
    )
    env.op.stop()
    child = env.op.start("op-json", env={"NODEOS_LOG_FORMAT": "json"})
    env.apply_plan(
        "logged",
        strategy={"maxUnavailable": 1},
        failurePolicy={"maxFailures": 1, "retries": 0, "uncordonOnFailure": True},
    )
    env.wait_phase("logged", "Completed", 90)
    wait_for("the last line", lambda: "-> Completed" in child.log.read_text(), 10)
    lines = [line for line in child.log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    node_lines = [e for e in entries if e.get("plan") == "logged" and e.get("node")]
    told = {(e["node"], e["message"].split(":")[0]) for e in node_lines}
    for step in ("Pending -> Cordoning", "Cordoning -> Draining", "Verifying -> Uncordoning"):
        assert ("worker-1", step) in told, sorted(told)
    failure = next(e for e in node_lines if e["node"] == "worker-2" and e["level"] == "WARNING")
    assert failure["reason"] == "InstallFailed"
    assert "exited with code 3" in failure["message"]
    finished = [e for e in entries if e.get("plan") == "logged" and e.get("phase") == "Completed"]
    assert finished and "2 of 3 node(s) on v1.13.9; 1 failed" in finished[-1]["message"]
    secret = yaml.safe_load(env.sim.talosconfig.read_text())
    key = next(iter(secret["contexts"].values()))["key"]
    text = "\n".join(lines)
    assert "PRIVATE KEY" not in text
    assert key[20:60] not in text and base64.b64decode(key)[40:80].decode() not in text


def test_a_deleted_plan_takes_its_metric_series_and_its_node_records_with_it(
    env_factory: Any,
) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "2", "--reboot-seconds", "1")
    env.apply_plan("measured")
    env.wait_phase("measured", "Completed", 60)
    wait_for(
        "the plan's series",
        lambda: (
            'nodeos_upgradeplan_phase{phase="Completed",plan="measured"} 1.0' in env.op.metrics()
        ),
        15,
    )
    assert 'nodeos_upgradeplan_nodes{phase="Done",plan="measured"} 2.0' in env.op.metrics()
    records = env.records("measured")
    assert {r["phase"] for r in records.values()} == {"Done"} and len(records) == 2, records
    key = annotation_key("measured")
    env.custom.delete_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", "measured")
    wait_for("the series gone", lambda: 'plan="measured"' not in env.op.metrics(), 30)
    wait_for(
        "the records gone",
        lambda: not any(key in (n.metadata.annotations or {}) for n in env.core.list_node().items),
        30,
    )


async def test_an_event_that_repeats_counts_on_the_first_instead_of_piling_up(
    kube: client.ApiClient,
) -> None:
    recorder = KubeClient(kube)
    try:
        for _ in range(3):
            await recorder.event("Node", "repeat-node", "uid-repeat", "v1", "Probe", "same thing")
        await recorder.event("Node", "repeat-node", "uid-repeat", "v1", "Probe", "something else")
    finally:
        await recorder.close()
    listed = client.CoreV1Api(kube).list_namespaced_event(
        "default", field_selector="involvedObject.name=repeat-node"
    )
    counts = sorted((e.message, e.count) for e in listed.items)
    assert counts == [("same thing", 3), ("something else", 1)], counts
