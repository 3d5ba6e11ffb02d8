"""Fake nodes for the sandbox: the kwok controller's flags and the Node objects it manages.

kwok keeps every Node annotated ``kwok.x-k8s.io/node=fake`` heartbeating (a node Lease, renewed
as a kubelet does) and Ready, runs the pods
the scheduler binds to them, and finalizes their deletion. A node whose status someone else must
own for a while (the node simulator during a reboot) is marked with ``DISREGARD_ANNOTATION`` and
kwok leaves its status alone until the mark is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
DISREGARD_ANNOTATION = "nodeos.dev/kwok-disregard-status"
NODE_LEASE_SECONDS = 40
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
FAKE_NODE_TOLERATION = {
    "key": "kwok.x-k8s.io/node",
    "operator": "Equal",
    "value": "fake",
    "effect": "NoSchedule",
}


def controller_flags(kubeconfig: str, *, lease_s: int = NODE_LEASE_SECONDS) -> list[str]:
    """Flags for a kwok controller that manages only the sandbox's fake nodes."""
    return [
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={MANAGED_ANNOTATION}=fake",
        f"--disregard-status-with-annotation-selector={DISREGARD_ANNOTATION}=true",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.0.0.1",
        "--server-address=",
        # Heartbeat through node Leases, as real kubelets (and kwokctl) do. Without them kwok
        # heartbeats by status updates only, every 20 s plus up to 25 s of jitter, which races
        # the controller manager's 50 s grace period: idle nodes flipped to Ready=Unknown for
        # an instant, their pods went NotReady and PDBs refused evictions.
        f"--node-lease-duration-seconds={lease_s}",
    ]


def fake_node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    os_image: str = "Talos (v1.12.4)",
    control_plane: bool = False,
    taint: bool = True,
) -> dict[str, Any]:
    """A Node object kwok will manage; control-plane nodes get the standard label and taint."""
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        # as a kubelet registers them; the controller manager otherwise adds them on a later
        # update, a label change in mid-rollout that no real node makes
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    if control_plane:
        all_labels["node-role.kubernetes.io/control-plane"] = ""
    all_labels.update(labels or {})
    taints = [dict(FAKE_NODE_TAINT)] if taint else []
    if control_plane:
        taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {MANAGED_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": os_image,
                "kubeletVersion": "fake",
                "kernelVersion": "6.12.0-talos",
                "containerRuntimeVersion": "containerd://2.1.0",
                "kubeProxyVersion": "",
                "bootID": "",
                "machineID": name,
                "systemUUID": name,
            },
        },
    }
