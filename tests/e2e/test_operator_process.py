"""`nodeos run` as a process: clear failure when its Lease cannot exist, health while waiting."""

from __future__ import annotations

import datetime
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers.e2e import wait_for
from nodeos.sandbox import cluster, processes
from nodeos.simulator.server import NodeSpec, Simulator, build_fleet

pytestmark = pytest.mark.sandbox


def usable_talosconfig(directory: Path) -> Path:
    """A valid talosconfig (for a simulator that is not running: nothing dials it here)."""
    simulator = Simulator(build_fleet([NodeSpec("n")], "v1.12.4", 1.0))
    return simulator.write_talosconfig(directory / "talosconfig")


def test_a_missing_lease_namespace_is_one_clear_error(
    sandbox: cluster.Sandbox, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeos",
            "run",
            "--kubeconfig",
            str(sandbox.kubeconfig),
            "--talosconfig",
            str(usable_talosconfig(tmp_path)),
            "--namespace",
            "no-such-namespace",
            "--metrics-port",
            str(processes.free_port()),
            "--health-port",
            str(processes.free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "namespace 'no-such-namespace' does not exist" in result.stderr


def test_a_standby_answers_health_checks_while_it_waits(
    sandbox: cluster.Sandbox, crds_installed: None, tmp_path: Path
) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    coordination = client.CoordinationV1Api(api)
    coordination.create_namespaced_lease(
        "nodeos-system",
        {
            "metadata": {"name": "held-elsewhere"},
            "spec": {
                "holderIdentity": "someone-else",
                "leaseDurationSeconds": 3600,
                "renewTime": datetime.datetime(2099, 1, 1, 0, 0, 0, 1, tzinfo=datetime.UTC),
            },
        },
    )
    port = processes.free_port()
    child = processes.start(
        "standby",
        [
            sys.executable,
            "-m",
            "nodeos",
            "run",
            "--kubeconfig",
            str(sandbox.kubeconfig),
            "--talosconfig",
            str(usable_talosconfig(tmp_path)),
            "--namespace",
            "nodeos-system",
            "--lease-name",
            "held-elsewhere",
            "--metrics-port",
            str(processes.free_port()),
            "--health-port",
            str(port),
        ],
        tmp_path / "standby.log",
    )
    try:

        def health() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return str(r.read().decode())
            except OSError:
                return ""

        assert wait_for("the health endpoint", health, 30) == "standby\n"
        wait_for("the standby to say so", lambda: "waiting for the lease" in child.log.read_text())
        assert health() == "standby\n", "still waiting: the Lease is held elsewhere"
    finally:
        processes.stop(child)
        coordination.delete_namespaced_lease("held-elsewhere", "nodeos-system")
        api.close()  # not left to the garbage collector (see helpers.e2e)
