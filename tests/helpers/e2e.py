"""End-to-end helpers: the `nodeos simulate` process against the sandbox, and waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from nodeos.sandbox import cluster, kwok, processes


def is_ready(obj: Any) -> bool:
    """The Node's or Pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in obj.status.conditions or [])


def wait_for(
    what: str, check: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval_s)
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
        info = json.loads(info_file.read_text())
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
        wait_for(
            "the simulated nodes to be Ready",
            lambda: all(is_ready(core.read_node(name)) for name in info["nodes"]),
        )
        yield SimulatorProcess(workdir, child.process, info)
    finally:
        if child.alive():
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                processes.stop(child)


@dataclass
class OperatorProcess:
    """`nodeos run` replicas (by identity) that tests can kill and restart."""

    sandbox: cluster.Sandbox
    talosconfig: Path
    workdir: Path
    replicas: dict[str, processes.Child] = field(default_factory=dict)
    starts: int = 0
    kubeconfig: Path | None = None  # default: the sandbox admin
    namespace: str = "nodeos-system"
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def start(self, identity: str = "op-a") -> processes.Child:
        self.starts += 1
        log = self.workdir / f"operator-{identity}-{self.starts}.log"
        self.metrics_ports[identity] = processes.free_port()
        child = processes.start(
            f"operator-{identity}",
            [
                sys.executable,
                "-m",
                "nodeos",
                "run",
                "--kubeconfig",
                str(self.kubeconfig or self.sandbox.kubeconfig),
                "--talosconfig",
                str(self.talosconfig),
                "--namespace",
                self.namespace,
                "--identity",
                identity,
                "--metrics-port",
                str(self.metrics_ports[identity]),
                "--health-port",
                str(processes.free_port()),
                "--poll-interval",
                "0.2",
            ],
            log,
            env=dict(os.environ),
        )
        self.replicas[identity] = child
        return child

    def kill(self, identity: str = "op-a") -> None:
        """SIGKILL: no chance to clean up, as in a node crash."""
        child = self.replicas[identity]
        os.killpg(child.pid, signal.SIGKILL)
        assert child.process is not None
        child.process.wait(timeout=10)

    def stop(self) -> None:
        for child in self.replicas.values():
            if child.alive():
                processes.stop(child)

    def metrics(self, identity: str = "op-a") -> str:
        url = f"http://127.0.0.1:{self.metrics_ports[identity]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{processes.log_tail(path, 40)}"
            for path in sorted(self.workdir.glob("operator-*.log"))
        )


@contextmanager
def operator_process(
    sandbox: cluster.Sandbox, talosconfig: Path, workdir: Path
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(sandbox, talosconfig, workdir)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def deployment(name: str, replicas: int, node_selector: dict[str, str]) -> dict[str, Any]:
    """A Deployment whose pods run on kwok nodes matching ``node_selector``."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": [kwok.FAKE_NODE_TOLERATION],
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        },
    }
