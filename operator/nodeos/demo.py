"""The live demo: a rolling OS upgrade of a simulated Talos fleet, shown as it happens.

Builds what is missing, starts the sandbox, installs the CRDs, starts the node simulator
(3 control-plane and 5 worker nodes on v1.12.4, driving their Node objects), deploys a workload
guarded by a PodDisruptionBudget, starts the operator, applies an UpgradePlan to v1.13.9 with
maxUnavailable 2, and redraws a per-node table until every node runs the new version. Then it
stops everything and deletes its files (unless ``--keep``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from nodeos import codegen
from nodeos.core.records import records_on
from nodeos.models import crdgen
from nodeos.sandbox import cluster, kwok, processes, toolchain

FROM, TO = "v1.12.4", "v1.13.9"
PLAN = "demo-talos-v1-13-9"
REPLICAS, MIN_AVAILABLE = 10, 8
TIMEOUT_S = 300


def run(*, keep: bool = False) -> int:
    """Runs the demo end to end; returns a process exit code."""
    paths = toolchain.ensure_built()
    toolchain.link_binaries(paths)
    workdir = Path(tempfile.mkdtemp(prefix="nodeos-demo-"))
    sandbox = cluster.Sandbox(workdir / "sandbox", paths, die_with_parent=not keep)
    children: list[processes.Child] = []
    _say("starting the sandbox control plane (etcd, kube-apiserver, controllers, kwok)")
    try:
        state = sandbox.start()
        _say(f"sandbox ready in {state.ready_after_s:.1f}s at {state.server}")
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))  # type: ignore[no-untyped-call]
        _install_crds(api)
        children.append(_start_simulator(sandbox, workdir, keep))
        _deploy_workload(api)
        children.append(_start_operator(sandbox, workdir, keep))
        _apply_plan(api)
        ok = _watch(api, time.monotonic())
    except cluster.SandboxError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        if keep:
            _say(f"left running; export KUBECONFIG={sandbox.kubeconfig}")
        else:
            for child in reversed(children):
                processes.stop(child)
            sandbox.stop()
            cluster.remove_workdir(workdir)
            _say("stopped the operator, the simulator and the sandbox; files removed")
    return 0 if ok else 1


def _install_crds(api: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api)
    for kind in codegen.ROOT_KINDS:
        extensions.create_custom_resource_definition(crdgen.crd_for(kind, kind.crd))  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.CustomObjectsApi(api).list_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "upgradeplans"
            )
            break
        except client.ApiException:
            time.sleep(0.3)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "nodeos-system"}})  # type: ignore[arg-type]
    _say("installed the UpgradePlan and NodeOSConfig CRDs")


def _python_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nodeos", *args]


def _start_simulator(sandbox: cluster.Sandbox, workdir: Path, keep: bool) -> processes.Child:
    simdir = workdir / "simulator"
    child = processes.start(
        "simulator",
        _python_command(
            "simulate",
            "--dir",
            str(simdir),
            "--kubeconfig",
            str(sandbox.kubeconfig),
            "--control-planes",
            "3",
            "--workers",
            "5",
            "--version",
            FROM,
            "--reboot-seconds",
            "4",
        ),
        workdir / "simulator.log",
        env=dict(os.environ),
        die_with_parent=not keep,
    )
    _wait_for_file(simdir / "simulator.json", child, "the simulator")
    info = json.loads((simdir / "simulator.json").read_text())
    _say(
        f"simulator serving {len(info['nodes'])} Talos nodes ({FROM}) on {info['endpoint']} "
        "over mTLS"
    )
    return child


def _start_operator(sandbox: cluster.Sandbox, workdir: Path, keep: bool) -> processes.Child:
    child = processes.start(
        "operator",
        _python_command(
            "run",
            "--kubeconfig",
            str(sandbox.kubeconfig),
            "--talosconfig",
            str(workdir / "simulator" / "talosconfig"),
            "--namespace",
            "nodeos-system",
            "--metrics-port",
            str(processes.free_port()),
            "--health-port",
            str(processes.free_port()),
            "--poll-interval",
            "0.2",
        ),
        workdir / "operator.log",
        env=dict(os.environ),
        die_with_parent=not keep,
    )
    _say(f"operator started (log: {workdir / 'operator.log'})")
    return child


def _deploy_workload(api: client.ApiClient) -> None:
    labels = {"app": "web"}
    client.AppsV1Api(api).create_namespaced_deployment(
        "default",
        {  # type: ignore[arg-type]
            "metadata": {"name": "web"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "tolerations": [kwok.FAKE_NODE_TOLERATION],
                        "containers": [{"name": "web", "image": "registry.invalid/web:1"}],
                    },
                },
            },
        },
    )
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        "default",
        {  # type: ignore[arg-type]
            "metadata": {"name": "web"},
            "spec": {"minAvailable": MIN_AVAILABLE, "selector": {"matchLabels": labels}},
        },
    )
    _say(f"deployed {REPLICAS} replicas of 'web' guarded by a PDB (minAvailable {MIN_AVAILABLE})")


def _apply_plan(api: client.ApiClient) -> None:
    client.CustomObjectsApi(api).create_cluster_custom_object(
        "nodeos.dev",
        "v1alpha1",
        "upgradeplans",
        {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "UpgradePlan",
            "metadata": {"name": PLAN},
            "spec": {
                "target": {"version": TO},
                "nodeSelector": {"matchLabels": {"type": "kwok"}},
                "strategy": {"maxUnavailable": 2},
                "drain": {"timeout": "2m"},
            },
        },
    )
    _say(f"applied UpgradePlan {PLAN}: every node to {TO}, control plane first, 2 at a time")


def _watch(api: client.ApiClient, started: float) -> bool:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    tty = sys.stdout.isatty()
    last: dict[str, str] = {}
    while time.monotonic() - started < TIMEOUT_S:
        plan: Any = custom.get_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", PLAN)
        status: dict[str, Any] = plan.get("status") or {}
        nodes: list[Any] = sorted(core.list_node(label_selector="type=kwok").items, key=_node_order)
        found = records_on(
            ((n.metadata.name, n.metadata.annotations or {}) for n in nodes),
            PLAN,
            plan["metadata"]["uid"],
        )
        records = {name: record.to_api() for name, record in found.items()}
        pods = core.list_namespaced_pod("default", label_selector="app=web").items
        rows = [_row(node, records.get(node.metadata.name), pods) for node in nodes]
        header = (
            f"plan {PLAN}: {status.get('phase', 'Pending')}  updated "
            f"{status.get('progress', '-')}  in flight {status.get('inFlight', [])}"
        )
        if tty:
            _redraw(header, rows, time.monotonic() - started)
        else:
            for row in rows:
                if last.get(row[0]) != row[2]:
                    _say(f"{row[0]:<9} {row[2]:<12} {row[3]}")
                    last[row[0]] = row[2]
        if status.get("phase") in ("Completed", "Failed"):
            elapsed = time.monotonic() - started
            on_target = all(_version(node) == TO for node in nodes)
            cordoned = [n.metadata.name for n in nodes if n.spec.unschedulable]
            _say(
                f"plan {status['phase']} in {elapsed:.0f}s: "
                f"{sum(_version(n) == TO for n in nodes)}/{len(nodes)} nodes on {TO}, "
                f"{len(cordoned)} cordoned"
            )
            if on_target and not cordoned:
                _say(f"every node runs {TO}")
            return bool(status["phase"] == "Completed" and on_target and not cordoned)
        time.sleep(0.5)
    _say("timed out")
    return False


def _row(node: Any, record: dict[str, Any] | None, pods: list[Any]) -> tuple[str, ...]:
    name = node.metadata.name
    role = (
        "control-plane"
        if "node-role.kubernetes.io/control-plane" in node.metadata.labels
        else ("worker")
    )
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    state = ("Ready" if ready else "NotReady") + (",Cordoned" if node.spec.unschedulable else "")
    phase = record["phase"] if record else "Pending"
    count = sum(1 for p in pods if p.spec.node_name == name and p.status.phase == "Running")
    return (name, role, phase, _version(node), state, str(count))


def _redraw(header: str, rows: list[tuple[str, ...]], elapsed: float) -> None:
    lines = [f"\033[2J\033[H{header}   ({elapsed:.0f}s)", ""]
    lines.append(f"{'NODE':<10} {'ROLE':<14} {'PHASE':<12} {'OS':<9} {'STATE':<20} PODS")
    lines += [f"{r[0]:<10} {r[1]:<14} {r[2]:<12} {r[3]:<9} {r[4]:<20} {r[5]}" for r in rows]
    print("\n".join(lines), flush=True)


def _node_order(node: Any) -> tuple[int, str]:
    labels = node.metadata.labels or {}
    return (0 if "node-role.kubernetes.io/control-plane" in labels else 1, node.metadata.name)


def _version(node: Any) -> str:
    image = node.status.node_info.os_image or ""
    return image.removeprefix("Talos (").removesuffix(")")


def _wait_for_file(path: Path, child: processes.Child, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            return
        if not child.alive():
            raise cluster.SandboxError(f"{what} exited:\n{processes.log_tail(child.log)}")
        time.sleep(0.2)
    raise cluster.SandboxError(f"{what} did not start in time:\n{processes.log_tail(child.log)}")


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)
