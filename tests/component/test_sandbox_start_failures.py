"""The launcher's failure path, with stand-in binaries (no Go build needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeos.sandbox import cluster


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_component_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    etcd = script(
        tmp_path / "etcd", 'echo "etcdmain: listen tcp: address already in use" >&2\nexit 1'
    )
    sandbox = cluster.Sandbox(tmp_path / "work", {"etcd": etcd})
    with pytest.raises(cluster.SandboxError) as failed:
        sandbox.start(timeout_s=10)
    message = str(failed.value)
    assert "etcd exited during start-up" in message
    assert "address already in use" in message
    assert sandbox.children == []
    assert cluster.load_state(tmp_path / "work") is None


def test_a_component_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    etcd = script(tmp_path / "etcd", f"echo $$ > {pid_file}\nexec sleep 60")
    sandbox = cluster.Sandbox(tmp_path / "work", {"etcd": etcd})
    with pytest.raises(cluster.SandboxError, match="timed out waiting for etcd"):
        sandbox.start(timeout_s=1.5)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
