"""The README's first command: `nodeos demo` rolls the simulated fleet and cleans up."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.sandbox


def test_demo_rolls_every_node_and_cleans_up(sandbox_binaries: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nodeos", "demo"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "every node runs v1.13.9" in out
    assert "plan Completed" in out
    for node in ("cp-1", "cp-3", "worker-5"):
        assert f"{node:<9} Done" in out, f"{node} progress was shown"
    assert "files removed" in out
