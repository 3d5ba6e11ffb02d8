"""The command line: shell completion, and the plan commands' text (without a cluster)."""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys

from nodeos.core.nodes import NodeView
from nodeos.models.upgradeplan import UpgradePlanSpec
from nodeos.plancli import preview_text, status_text

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def complete(*words: str) -> list[str]:
    script = (
        f"source <({sys.executable} -m nodeos completion bash); "
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; _nodeos; "
        'echo "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_offers_commands_and_flags() -> None:
    assert complete("nodeos", "pl") == ["plan"]
    assert complete("nodeos", "plan", "ap") == ["approve"]
    assert "--watch" in complete("nodeos", "plan", "status", "--w")
    assert complete("kubectl-nodeos", "pre") == ["preview"]


def node(name: str, *, cp: bool = False, version: str = "v1.12.4") -> NodeView:
    labels = {"pool": "a", **({"node-role.kubernetes.io/control-plane": ""} if cp else {})}
    return NodeView(
        name,
        labels,
        ready=True,
        unschedulable=False,
        cordoned_by=None,
        os_image=f"Talos ({version})",
    )


def test_preview_lists_batches_gates_and_an_estimate() -> None:
    spec = UpgradePlanSpec.model_validate(
        {
            "target": {"version": "v1.13.9"},
            "nodeSelector": {"matchLabels": {"pool": "a"}},
            "strategy": {"maxUnavailable": 2, "canary": {"count": 1, "pauseAfter": True}},
        }
    )
    nodes = [node("cp-1", cp=True), node("w-1"), node("w-2"), node("w-3", version="v1.13.9")]
    text = preview_text("p", spec, nodes, NOW, argparse.Namespace(minutes_per_node=5.0))
    assert "4 node(s) selected, 1 already on v1.13.9, maxUnavailable 2" in text
    assert "batch   1: cp-1\n  batch   2: w-1, w-2" in text
    assert "canary: the first 1 node(s) alone, then a person approves" in text
    assert "2 batch(es) x 5 min = about 10 min" in text


def test_status_shows_a_progress_bar_and_a_row_per_node() -> None:
    plan = {
        "metadata": {"name": "fleet"},
        "status": {
            "phase": "Progressing",
            "message": "in flight: w-2",
            "counts": {"total": 4, "updated": 2, "inProgress": 1, "failed": 0, "pending": 1},
        },
    }
    records = {
        "w-2": {"name": "w-2", "phase": "Draining", "message": "1 pod(s) left to evict"},
        "w-1": {"name": "w-1", "phase": "Done", "since": "2026-11-26T12:00:00Z"},
    }
    text = status_text(plan, records)
    assert text.startswith("fleet: Progressing - in flight: w-2\n")
    assert "[" + "#" * 15 + "." * 15 + "] 2/4 done, 1 in progress" in text
    assert "w-2" in text and "1 pod(s) left to evict" in text
    assert text.index("\nw-1 ") < text.index("\nw-2 "), "rows are in node order"
