"""The generated CRDs in the real API server: accepted, examples round-trip, bad input refused."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from nodeos.models.upgradeplan import NodeProgress, UpgradePlanStatus
from nodeos.sandbox import cluster

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
INVALID = sorted((REPO / "tests/fixtures/invalid").glob("*.yaml"))
PLURALS = {"UpgradePlan": "upgradeplans", "NodeOSConfig": "nodeosconfigs"}


def kubectl(
    binaries: dict[str, Path], sandbox: cluster.Sandbox, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries["kubectl"]), f"--kubeconfig={sandbox.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_round_trips_unchanged(
    path: Path,
    crds_installed: None,
    sandbox: cluster.Sandbox,
    sandbox_binaries: dict[str, Path],
) -> None:
    document = yaml.safe_load(path.read_text())
    applied = kubectl(sandbox_binaries, sandbox, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    plural = PLURALS[document["kind"]]
    name = document["metadata"]["name"]
    fetched = kubectl(sandbox_binaries, sandbox, "get", f"{plural}.nodeos.dev", name, "-o", "json")
    stored = json.loads(fetched.stdout)
    assert stored["spec"] == document["spec"]
    kubectl(sandbox_binaries, sandbox, "delete", "-f", str(path))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(
    path: Path,
    crds_installed: None,
    sandbox: cluster.Sandbox,
    sandbox_binaries: dict[str, Path],
) -> None:
    text = path.read_text()
    expected = [
        line.removeprefix("# expect: ") for line in text.splitlines() if "# expect:" in line
    ]
    assert expected, f"{path.name} says nothing about what it expects"
    applied = kubectl(sandbox_binaries, sandbox, "apply", "-f", "-", stdin=text)
    assert applied.returncode != 0, f"{path.name} was accepted"
    for fragment in expected:
        assert fragment in applied.stderr, f"{fragment!r} not in: {applied.stderr}"
    document = yaml.safe_load(text)
    missing = kubectl(
        sandbox_binaries, sandbox, "get", f"{PLURALS[document['kind']]}.nodeos.dev", "invalid"
    )
    assert missing.returncode != 0, "nothing may be stored from a rejected manifest"


def test_printer_columns_show_where_a_rollout_stands(
    crds_installed: None, sandbox: cluster.Sandbox, sandbox_binaries: dict[str, Path]
) -> None:
    path = REPO / "examples/upgradeplan-basic.yaml"
    assert kubectl(sandbox_binaries, sandbox, "apply", "-f", str(path)).returncode == 0
    try:
        table = kubectl(sandbox_binaries, sandbox, "get", "uplan", "talos-v1.13.9")
        header = table.stdout.splitlines()[0].split()
        assert header == ["NAME", "PHASE", "TARGET", "UPDATED", "IN-PROGRESS", "FAILED", "AGE"]
        assert "v1.13.9" in table.stdout.splitlines()[1]
    finally:
        kubectl(sandbox_binaries, sandbox, "delete", "-f", str(path))


def test_a_status_with_5000_records_left_by_an_earlier_version_is_still_accepted(
    crds_installed: None, kube: client.ApiClient, figures: list[str]
) -> None:
    custom = client.CustomObjectsApi(kube)
    body = yaml.safe_load((REPO / "examples/upgradeplan-basic.yaml").read_text())
    body["metadata"]["name"] = "five-thousand"
    custom.create_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", body)
    status = big_status(5000)
    payload = {"status": status}
    size = len(json.dumps(payload, separators=(",", ":")))
    custom.patch_cluster_custom_object_status(
        "nodeos.dev", "v1alpha1", "upgradeplans", "five-thousand", payload
    )
    stored = custom.get_cluster_custom_object(
        "nodeos.dev", "v1alpha1", "upgradeplans", "five-thousand"
    )
    assert len(stored["status"]["nodes"]) == 5000
    assert stored["status"]["nodes"][4999] == status["nodes"][4999]
    figures.append(f"UpgradePlan status with 5,000 nodes: {size / 1024:.0f} KiB of JSON")
    assert size < 1024 * 1024, "must stay well under the 1.5 MiB request limit"
    custom.delete_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", "five-thousand")


def big_status(count: int) -> dict[str, Any]:
    """A worst-realistic status: every node recorded, a few in flight with full detail."""
    now = datetime.datetime(2026, 11, 26, 6, 0, tzinfo=datetime.UTC)
    nodes = [
        NodeProgress(name=f"worker-{i:05d}", phase="Done", since=now, from_version="v1.12.4")
        for i in range(count - 3)
    ]
    nodes += [
        NodeProgress(
            name=f"worker-{i:05d}",
            phase="Rebooting",
            since=now,
            attempt=1,
            boot_id="0f5c7e1e-6a87-4a43-9d53-1d2b8f1e9c3a",
            from_version="v1.12.4",
            deadline=now + datetime.timedelta(minutes=30),
            cordoned_by_us=True,
        )
        for i in range(count - 3, count)
    ]
    status = UpgradePlanStatus(
        phase="Progressing",
        progress=f"{count - 3}/{count}",
        in_flight=[n.name for n in nodes[-3:]],
        nodes=nodes,
    )
    return status.to_api()
