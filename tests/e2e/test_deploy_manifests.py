"""The plain manifests apply as documented, on an empty cluster of their own.

``kubectl apply -f deploy/`` and ``kubectl apply -k deploy/`` are the two commands the README
gives for installing without Helm; both must work on a cluster where nothing of nodeos exists
yet (no namespace, no CRDs), and everything they create must carry honest labels.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nodeos.sandbox import cluster

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]


def test_deploy_applies_with_f_and_with_k_on_an_empty_cluster(
    sandbox_binaries: dict[str, Path], tmp_path: Path, figures: list[str]
) -> None:
    empty = cluster.Sandbox(tmp_path / "empty", sandbox_binaries)
    empty.start()
    try:
        kubectl = [str(sandbox_binaries["kubectl"]), f"--kubeconfig={empty.kubeconfig}"]

        def run(*args: str) -> str:
            result = subprocess.run(
                [*kubectl, *args], capture_output=True, text=True, timeout=120, check=False
            )
            assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
            return result.stdout

        created = run("apply", "-f", str(REPO / "deploy"))
        assert "namespace/nodeos-system created" in created
        assert "deployment.apps/nodeos created" in created
        again = run("apply", "-k", str(REPO / "deploy"))
        assert "created" not in again, "the kustomization describes the same objects"
        objects = json.loads(
            run(
                "get",
                "deployment,serviceaccount,role,rolebinding",
                "-n",
                "nodeos-system",
                "-o",
                "json",
            )
        )["items"]
        assert {o["kind"] for o in objects} == {
            "Deployment",
            "ServiceAccount",
            "Role",
            "RoleBinding",
        }
        for item in objects:
            labels = item["metadata"].get("labels") or {}
            assert labels.get("app.kubernetes.io/managed-by") != "Helm", item["metadata"]["name"]
        figures.append(f"deploy/: {created.count(chr(10))} objects applied with -f, then -k")
    finally:
        empty.stop()
