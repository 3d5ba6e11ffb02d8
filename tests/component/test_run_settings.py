"""`nodeos run` refuses settings it cannot work with: one clear line, exit 2, no Lease taken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("context: prod\ncontexts: {}\n", "'contexts' is missing or empty"),
        ("{{{", "not valid YAML"),
    ],
)
def test_an_unusable_talosconfig_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    talosconfig = tmp_path / "talosconfig"
    if content is not None:
        talosconfig.write_text(content)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeos",
            "run",
            "--kubeconfig",
            str(tmp_path / "no-cluster-is-contacted"),
            "--talosconfig",
            str(talosconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot start" in lines[0]
    assert expected in lines[0]
    assert str(talosconfig) in lines[0]
