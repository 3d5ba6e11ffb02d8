"""Shared fixtures. Nothing here is faked: ``sandbox`` is a real control plane on loopback.

The sandbox is built (when missing) and started once per test session; its start-up time is
printed in the terminal summary. Tests that use it carry the ``sandbox`` marker.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from helpers import sockets
from nodeos.sandbox import cluster, toolchain

_FIGURES: list[str] = []


@pytest.hookimpl(trylast=True)  # after pytest's own hook for unraisable exceptions is set
def pytest_configure(config: pytest.Config) -> None:
    sockets.trace()  # before any fixture opens a connection
    sockets.name_makers_of_unraisable()


@pytest.fixture(scope="session")
def figures() -> list[str]:
    """Measured figures to print in the terminal summary (not asserted as timings)."""
    return _FIGURES


@pytest.fixture(scope="session")
def sandbox_binaries() -> dict[str, Path]:
    paths = toolchain.ensure_built()
    toolchain.link_binaries(paths)
    return paths


@pytest.fixture(scope="session")
def sandbox(
    sandbox_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[cluster.Sandbox]:
    workdir = tmp_path_factory.mktemp("sandbox")
    running = cluster.Sandbox(workdir, sandbox_binaries)
    running.start()
    _FIGURES.append(f"sandbox (warm binaries) ready in {running.ready_after_s:.1f}s")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def kube(sandbox: cluster.Sandbox) -> Iterator[client.ApiClient]:
    """The sandbox admin's client; its pooled connections are closed when the session ends,
    not left to the collector (which warns of each one it finds open)."""
    api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def crds_installed(sandbox: cluster.Sandbox, sandbox_binaries: dict[str, Path]) -> None:
    """The nodeos CRDs applied with kubectl and served, plus the operator's namespace."""
    kubectl = [str(sandbox_binaries["kubectl"]), f"--kubeconfig={sandbox.kubeconfig}"]
    repo = Path(__file__).resolve().parents[1]
    applied = subprocess.run(
        [*kubectl, "apply", "-f", str(repo / "crds")], capture_output=True, text=True, check=False
    )
    assert applied.returncode == 0, applied.stderr
    subprocess.run(
        [*kubectl, "create", "namespace", "nodeos-system"], capture_output=True, check=False
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = subprocess.run([*kubectl, "get", "uplan,nosc"], capture_output=True, check=False)
        if listed.returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail("the nodeos kinds never appeared in discovery")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _FIGURES:
        terminalreporter.write_line(f"[figures] {line}")
