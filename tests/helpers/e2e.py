"""End-to-end helpers: the `nodeos simulate` process against the sandbox, and waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeos.sandbox import cluster, processes


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class SimulatorProcess:
    workdir: Path
    process: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def talosconfig(self) -> Path:
        return Path(self.info["talosconfig"])

    @property
    def endpoint(self) -> str:
        return str(self.info["endpoint"])


@contextmanager
def simulator_process(
    sandbox: cluster.Sandbox, workdir: Path, *args: str
) -> Iterator[SimulatorProcess]:
    """Runs `nodeos simulate --kubeconfig <sandbox>` until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "simulator.log"
    child = processes.start(
        "simulator",
        [
            sys.executable,
            "-m",
            "nodeos",
            "simulate",
            "--dir",
            str(workdir),
            "--kubeconfig",
            str(sandbox.kubeconfig),
            *args,
        ],
        log,
        env=dict(os.environ),
    )
    assert child.process is not None
    info_file = workdir / "simulator.json"
    try:
        wait_for(
            "the simulator to start",
            lambda: info_file.exists() or child.process.poll() is not None,  # type: ignore[union-attr]
            timeout_s=60,
        )
        assert info_file.exists(), f"simulator exited:\n{processes.log_tail(log)}"
        yield SimulatorProcess(workdir, child.process, json.loads(info_file.read_text()))
    finally:
        if child.alive():
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                processes.stop(child)
