"""The command blocks the docs mark as runnable run against the sandbox, so they cannot drift.

A fenced ``sh`` block right after ``<!-- doctest: runs in tests/e2e/test_docs.py -->`` in the
README or docs/operating.md is run line by line (comments skipped; ``(the second line)`` in the
marker picks one line) in the repository, with the sandbox's KUBECONFIG, its kubectl on PATH,
a simulated fleet and an UpgradePlan named ``fleet``. Every line must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.rollout_env import Env
from nodeos.sandbox import toolchain

pytestmark = pytest.mark.sandbox
REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- doctest: runs in tests/e2e/test_docs.py(?: \(the (\w+) line\))? -->")
ORDINALS = {"first": 0, "second": 1, "third": 2}


def runnable_lines(path: Path) -> list[str]:
    """The commands of every marked block of ``path``."""
    text = path.read_text().splitlines()
    commands: list[str] = []
    for index, line in enumerate(text):
        found = MARKER.search(line)
        if not found:
            continue
        assert text[index + 1].startswith("```sh"), f"{path}:{index + 2}: a marked block is sh"
        block = []
        for body in text[index + 2 :]:
            if body.startswith("```"):
                break
            command = body.split("  #")[0].strip()
            if command and not command.startswith("#"):
                block.append(command)
        pick = found.group(1)
        commands += [block[ORDINALS[pick]]] if pick else block
    return commands


def test_every_document_marks_some_commands() -> None:
    assert runnable_lines(REPO / "README.md")
    assert len(runnable_lines(REPO / "docs/operating.md")) >= 5


def test_the_documented_commands_run(env_factory: Any) -> None:
    env: Env = env_factory("--control-planes", "0", "--workers", "3", "--reboot-seconds", "1")
    env.apply_plan("fleet", strategy={"maxUnavailable": 2})
    bin_dir = Path(sys.executable).parent
    environ = {
        **os.environ,
        "KUBECONFIG": str(env.op.sandbox.kubeconfig),
        "PATH": f"{bin_dir}{os.pathsep}{toolchain.cache_root() / 'bin'}{os.pathsep}"
        f"{os.environ.get('PATH', '')}",
    }
    failures = []
    for doc in ("README.md", "docs/operating.md"):
        for command in runnable_lines(REPO / doc):
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=REPO,
                env=environ,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            if result.returncode != 0:
                failures.append(
                    f"{doc}: {command}: exit {result.returncode}: {result.stderr[-500:]}"
                )
    assert failures == []
