"""End-to-end helpers: the `nodeos simulate` process against the sandbox, and waiting."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from nodeos.core.records import records_on
from nodeos.sandbox import cluster, kwok, processes


def plan_records(core: client.CoreV1Api, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A plan's node records, read from the Nodes that carry them (camelCase, with the name)."""
    found = records_on(
        ((n.metadata.name, n.metadata.annotations or {}) for n in core.list_node().items),
        plan["metadata"]["name"],
        plan["metadata"]["uid"],
    )
    return {name: record.to_api() for name, record in found.items()}


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
        # closed here, not left to the garbage collector: a socket it finds open later warns
        # (an error under the suite's filterwarnings) in whichever test is running then
        with config.new_client_from_config(config_file=str(sandbox.kubeconfig)) as api:
            core = client.CoreV1Api(api)
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

    def start(
        self,
        identity: str = "op-a",
        *,
        talosconfig: Path | None = None,
        kubeconfig: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> processes.Child:
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
                str(kubeconfig or self.kubeconfig or self.sandbox.kubeconfig),
                "--talosconfig",
                str(talosconfig or self.talosconfig),
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
            env={**os.environ, **(env or {})},
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


class Partition:
    """A TCP relay in front of the API server that a test can cut.

    Once cut, nothing passes in either direction: requests already sent and new connections
    hang (the worst case for a client: no error, no answer), as in a network partition.
    Whatever was held back is dropped, never delivered late.
    """

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        document = yaml.safe_load(kubeconfig.read_text())
        server = urllib.parse.urlsplit(document["clusters"][0]["cluster"]["server"])
        self._upstream = (server.hostname or "127.0.0.1", server.port or 443)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        document["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        self.kubeconfig = workdir / "kubeconfig-through-partition"
        self.kubeconfig.write_text(yaml.safe_dump(document))
        self.cut_at: float | None = None
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.cut_at = time.time()

    def close(self) -> None:
        self._closed.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(downstream)
            if self.cut_at is not None:
                continue  # accepted, never answered
            upstream = socket.create_connection(self._upstream)
            self._sockets.append(upstream)
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data or self.cut_at is not None:
                    break
                sink.sendall(data)
        if self.cut_at is None:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # a normal end of the connection
        while self.cut_at is not None and not self._closed.is_set():
            time.sleep(0.1)  # hold both ends open: the client sees a hang, not a reset


def service_account_token(
    sandbox: cluster.Sandbox, kubectl: Path, account: str, namespace: str
) -> str:
    """A bound token of one ServiceAccount, valid for an hour."""
    return subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={sandbox.kubeconfig}",
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--duration=1h",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def token_kubeconfig(
    sandbox: cluster.Sandbox, kubectl: Path, path: Path, account: str, namespace: str
) -> Path:
    """A kubeconfig that authenticates as one ServiceAccount, nothing else."""
    token = service_account_token(sandbox, kubectl, account, namespace)
    admin = yaml.safe_load(sandbox.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": cluster_entry["name"], "user": account}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    return path
