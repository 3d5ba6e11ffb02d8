"""Runs a real Kubernetes control plane on loopback: etcd, kube-apiserver, controllers, kwok.

``Sandbox.start()`` generates a CA, serving and admin client certificates and a service-account
key, starts each component on free ports with its log under ``<workdir>/logs/``, writes an admin
kubeconfig, and returns once the API is ready and the default service accounts exist. ``stop()``
ends every process group. A failed start stops what it started and raises ``SandboxError`` with
the tail of each component's log.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from nodeos import pki
from nodeos.sandbox import kwok, processes

_STATE_FILE = "sandbox.json"
_SERVICE_CIDR = "10.96.0.0/16"


class SandboxError(RuntimeError):
    """The sandbox could not start or is not running; the message says which part and why."""


@dataclass
class SandboxState:
    """What a running sandbox leaves on disk so another process can find and stop it."""

    workdir: str
    kubeconfig: str
    server: str
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_after_s: float = 0.0


class Sandbox:
    """One control plane in one working directory."""

    def __init__(
        self,
        workdir: Path,
        binaries: dict[str, Path],
        *,
        die_with_parent: bool = True,
        with_kwok: bool = True,
        audit_policy: dict[str, Any] | None = None,
        node_lease_s: int = kwok.NODE_LEASE_SECONDS,
    ) -> None:
        """A sandbox in ``workdir``, stopped until ``start``.

        ``audit_policy``: an audit.k8s.io/v1 Policy; the API server then writes its audit log
        (JSON lines) to ``audit_log``. ``node_lease_s``: the fake nodes' Lease duration (kwok
        renews a quarter of it); longer than a kubelet's 40 s, the controller manager's grace
        period grows with it, so a fleet of thousands heartbeats at the rate of a smaller one.
        """
        self.workdir = workdir
        self.node_lease_s = node_lease_s
        self.audit_policy = audit_policy
        self.audit_log = workdir / "logs" / "audit.log"
        self.binaries = binaries
        self.die_with_parent = die_with_parent
        self.with_kwok = with_kwok
        self.children: list[processes.Child] = []
        self.kubeconfig = workdir / "kubeconfig"
        self.server = ""
        self.ready_after_s = 0.0
        self._pki = workdir / "pki"
        self._logs = workdir / "logs"
        self._argv: dict[str, list[str]] = {}
        self._etcd_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> SandboxState:
        """Starts every component and waits until the cluster is usable."""
        started = time.monotonic()
        deadline = started + timeout_s
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_pki()
            etcd_url = self._start_etcd(deadline)
            self._start_apiserver(etcd_url, deadline)
            self._start_controllers()
            self._wait_for_default_service_account(deadline)
        except BaseException:
            self._stop_children()
            raise
        self.ready_after_s = time.monotonic() - started
        state = self.state()
        (self.workdir / _STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        return state

    def stop(self) -> None:
        """Stops every component (SIGTERM, then SIGKILL) and forgets the state file."""
        self._stop_children()
        (self.workdir / _STATE_FILE).unlink(missing_ok=True)

    def state(self) -> SandboxState:
        """The description written to ``sandbox.json``."""
        return SandboxState(
            workdir=str(self.workdir),
            kubeconfig=str(self.kubeconfig),
            server=self.server,
            pids={child.name: child.pid for child in self.children},
            started_at=time.time(),
            ready_after_s=round(self.ready_after_s, 2),
        )

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- components ------------------------------------------------------------------------

    def _write_pki(self) -> None:
        ca = pki.CertificateAuthority.create("nodeos-sandbox-ca")
        serving = ca.issue(
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1", "10.96.0.1"),
            server=True,
        )
        admin = ca.issue("nodeos-admin", organizations=("system:masters",), client=True)
        sa_key, sa_pub = pki.rsa_key_pair_pem()
        pki.write_pem(self._pki / "ca.crt", ca.cert_pem)
        pki.write_pem(self._pki / "ca.key", ca.key_pem, secret=True)
        pki.write_pem(self._pki / "apiserver.crt", serving.cert_pem)
        pki.write_pem(self._pki / "apiserver.key", serving.key_pem, secret=True)
        pki.write_pem(self._pki / "admin.crt", admin.cert_pem)
        pki.write_pem(self._pki / "admin.key", admin.key_pem, secret=True)
        pki.write_pem(self._pki / "sa.key", sa_key, secret=True)
        pki.write_pem(self._pki / "sa.pub", sa_pub)

    def _start_etcd(self, deadline: float) -> str:
        client_port, peer_port = processes.free_port(), processes.free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=sandbox",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=sandbox={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait_until("etcd", deadline, lambda: _etcd_healthy(client_url))
        self._etcd_url = client_url
        return client_url

    def _start_apiserver(self, etcd_url: str, deadline: float) -> None:
        port = processes.free_port()
        self.server = f"https://127.0.0.1:{port}"
        p = self._pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
                *self._audit_args(),
            ],
        )
        self._write_kubeconfig()
        self._wait_until("kube-apiserver", deadline, self._apiserver_ready)

    def _audit_args(self) -> list[str]:
        if self.audit_policy is None:
            return []
        policy = self.workdir / "audit-policy.json"
        policy.write_text(json.dumps(self.audit_policy))
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
        ]

    def _start_controllers(self) -> None:
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self._pki / 'sa.key'}",
                f"--root-ca-file={self._pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={self._pki / 'ca.crt'}",
                f"--cluster-signing-key-file={self._pki / 'ca.key'}",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                *self._grace_flags(),
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        if self.with_kwok:
            flags = kwok.controller_flags(kubeconfig, lease_s=self.node_lease_s)
            self._spawn("kwok", [str(self.binaries["kwok"]), *flags])

    def _grace_flags(self) -> list[str]:
        """A node-monitor grace period that outlasts a longer fake-node Lease (default else)."""
        if self.node_lease_s <= kwok.NODE_LEASE_SECONDS:
            return []
        return [f"--node-monitor-grace-period={self.node_lease_s + 10}s"]

    def restart(self, name: str, *, down_s: float = 0.0, timeout_s: float = 60.0) -> float:
        """Kills one component (SIGKILL, as a crash) and starts it again in place.

        Same flags, data directory and ports, so clients reconnect to the same address and etcd
        keeps its data. Waits until etcd is healthy or the API server ready again (other
        components: until started); returns the seconds it was unavailable.
        """
        child = next((c for c in self.children if c.name == name), None)
        if child is None:
            raise SandboxError(f"no running component named {name!r}")
        began = time.monotonic()
        processes.kill(child)
        self.children.remove(child)
        time.sleep(down_s)
        self._spawn(name, self._argv[name])
        deadline = time.monotonic() + timeout_s
        if name == "etcd":
            self._wait_until("etcd", deadline, lambda: _etcd_healthy(self._etcd_url))
        elif name == "kube-apiserver":
            self._wait_until("kube-apiserver", deadline, self._apiserver_ready)
        (self.workdir / _STATE_FILE).write_text(json.dumps(asdict(self.state()), indent=2))
        return time.monotonic() - began

    def _spawn(self, name: str, argv: list[str]) -> None:
        self._argv[name] = list(argv)
        child = processes.start(
            name, argv, self._logs / f"{name}.log", die_with_parent=self.die_with_parent
        )
        self.children.append(child)

    def _stop_children(self) -> None:
        for child in reversed(self.children):
            processes.stop(child)
        self.children.clear()

    # -- readiness -------------------------------------------------------------------------

    def _wait_until(self, what: str, deadline: float, check: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            dead = [child for child in self.children if not child.alive()]
            if dead:
                raise SandboxError(self._failure_report(f"{dead[0].name} exited during start-up"))
            if check():
                return
            time.sleep(0.2)
        raise SandboxError(self._failure_report(f"timed out waiting for {what}"))

    def _apiserver_ready(self) -> bool:
        return self.get("/readyz") is not None

    def _wait_for_default_service_account(self, deadline: float) -> None:
        self._wait_until(
            "the default service account (kube-controller-manager)",
            deadline,
            lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )

    def get(self, path: str) -> bytes | None:
        """GETs an API path as the sandbox admin; None when it fails or is not there."""
        request = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(request, context=self._tls(), timeout=5) as reply:
                body: bytes = reply.read()
                return body
        except (urllib.error.URLError, OSError):
            return None

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self._pki / "ca.crt"))
        context.load_cert_chain(str(self._pki / "admin.crt"), str(self._pki / "admin.key"))
        return context

    def _failure_report(self, headline: str) -> str:
        parts = [f"sandbox start-up failed: {headline}", f"logs are in {self._logs}"]
        for child in self.children:
            state = "running" if child.alive() else "exited"
            parts.append(f"--- {child.name} ({state}), last lines of {child.log.name}:")
            parts.append(processes.log_tail(child.log))
        return "\n".join(parts)

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self._pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "nodeos-sandbox",
                    "cluster": {"server": self.server, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "nodeos-admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "nodeos-sandbox",
                    "context": {"cluster": "nodeos-sandbox", "user": "nodeos-admin"},
                }
            ],
            "current-context": "nodeos-sandbox",
        }
        self.kubeconfig.touch(mode=0o600, exist_ok=True)
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))


def load_state(workdir: Path) -> SandboxState | None:
    """The state a running sandbox left in ``workdir``, if any."""
    path = workdir / _STATE_FILE
    if not path.exists():
        return None
    return SandboxState(**json.loads(path.read_text()))


def stop_detached(workdir: Path) -> bool:
    """Stops a sandbox started by another process; True when there was one to stop."""
    state = load_state(workdir)
    if state is None:
        return False
    for name, pid in reversed(list(state.pids.items())):
        processes.stop(processes.Child(name=name, pid=pid, log=workdir / "logs" / f"{name}.log"))
    (workdir / _STATE_FILE).unlink(missing_ok=True)
    return True


def remove_workdir(workdir: Path) -> None:
    """Deletes a stopped sandbox's files (certificates, etcd data, logs)."""
    shutil.rmtree(workdir, ignore_errors=True)


def _etcd_healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=2) as reply:
            return bool(json.loads(reply.read()).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False
