"""The live demo: a sandbox cluster with a small Talos-like fleet and a protected workload.

Builds what is missing, starts the sandbox, registers 3 control-plane and 5 worker nodes (kwok),
deploys a workload guarded by a PodDisruptionBudget, and shows nodes and pods as they come up.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from nodeos.sandbox import cluster, kwok, toolchain

CONTROL_PLANE = ("cp-1", "cp-2", "cp-3")
WORKERS = ("worker-1", "worker-2", "worker-3", "worker-4", "worker-5")
ZONES = ("zone-a", "zone-b", "zone-c")
WORKLOAD = "web"
REPLICAS = 10


def run(*, keep: bool = False) -> int:
    """Runs the demo end to end; returns a process exit code."""
    say = _say
    paths = toolchain.ensure_built()
    toolchain.link_binaries(paths)
    workdir = Path(tempfile.mkdtemp(prefix="nodeos-demo-"))
    sandbox = cluster.Sandbox(workdir, paths, die_with_parent=not keep)
    say("starting the sandbox control plane (etcd, kube-apiserver, controllers, kwok)")
    try:
        state = sandbox.start()
    except cluster.SandboxError as error:
        print(error, file=sys.stderr)
        return 1
    say(f"sandbox ready in {state.ready_after_s:.1f}s at {state.server}")
    try:
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))  # type: ignore[no-untyped-call]
        _create_fleet(client.CoreV1Api(api))
        _create_workload(client.AppsV1Api(api), client.PolicyV1Api(api))
        ok = _watch(client.CoreV1Api(api), timeout_s=120)
    finally:
        if keep:
            say(f"sandbox left running: export KUBECONFIG={sandbox.kubeconfig}")
            say(f"stop it with: nodeos sandbox down --dir {workdir}")
        else:
            sandbox.stop()
            cluster.remove_workdir(workdir)
            say("sandbox stopped and cleaned up")
    return 0 if ok else 1


def _create_fleet(core: Any) -> None:
    for index, name in enumerate((*CONTROL_PLANE, *WORKERS)):
        node = kwok.fake_node(
            name,
            control_plane=name in CONTROL_PLANE,
            labels={"topology.kubernetes.io/zone": ZONES[index % len(ZONES)]},
        )
        core.create_node(node)
    _say(f"registered {len(CONTROL_PLANE)} control-plane and {len(WORKERS)} worker nodes")


def _create_workload(apps: Any, policy: Any) -> None:
    labels = {"app": WORKLOAD}
    apps.create_namespaced_deployment(
        "default",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": WORKLOAD},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "tolerations": [kwok.FAKE_NODE_TOLERATION],
                        "nodeSelector": {"type": "kwok"},
                        "containers": [{"name": "web", "image": "registry.invalid/web:1"}],
                    },
                },
            },
        },
    )
    policy.create_namespaced_pod_disruption_budget(
        "default",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": WORKLOAD},
            "spec": {"minAvailable": REPLICAS - 2, "selector": {"matchLabels": labels}},
        },
    )
    _say(f"deployed {REPLICAS} replicas of '{WORKLOAD}' with a PDB (minAvailable {REPLICAS - 2})")


def _watch(core: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        nodes = core.list_node().items
        pods = core.list_namespaced_pod("default", label_selector=f"app={WORKLOAD}").items
        ready = sum(1 for node in nodes if _node_ready(node))
        running = sum(1 for pod in pods if pod.status.phase == "Running")
        line = f"nodes Ready {ready}/{len(nodes)} | pods Running {running}/{REPLICAS}"
        if line != last:
            _say(line)
            last = line
        if ready == len(nodes) == len(CONTROL_PLANE) + len(WORKERS) and running == REPLICAS:
            _print_nodes(nodes, pods)
            return True
        time.sleep(0.5)
    _say("timed out before the fleet and workload were up")
    return False


def _print_nodes(nodes: list[Any], pods: list[Any]) -> None:
    per_node: dict[str, int] = {}
    for pod in pods:
        per_node[pod.spec.node_name] = per_node.get(pod.spec.node_name, 0) + 1
    print(f"\n{'NODE':<10} {'READY':<6} {'ROLE':<14} {'ZONE':<7} {'OS IMAGE':<18} PODS")
    for node in sorted(nodes, key=lambda n: n.metadata.name):
        labels = node.metadata.labels
        role = "control-plane" if "node-role.kubernetes.io/control-plane" in labels else "worker"
        print(
            f"{node.metadata.name:<10} {_node_ready(node)!s:<6} {role:<14} "
            f"{labels.get('topology.kubernetes.io/zone', ''):<7} "
            f"{node.status.node_info.os_image:<18} {per_node.get(node.metadata.name, 0)}"
        )
    print()


def _node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)
