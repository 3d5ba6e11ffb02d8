"""Rollout benchmark: how much time and load the operator adds on top of the nodes themselves.

Runs the sandbox, the simulator with N nodes (reboot time T, no faults) and the operator, with
no workload (so drains find nothing to move), applies one UpgradePlan and prints:
- wall time vs the ideal (control-plane nodes one at a time, workers ceil(W / maxUnavailable)
  batches, each batch taking one node's own time), and their ratio;
- transition latency (slot freed -> next node cordoned) from the operator's histogram;
- Kubernetes API requests per node, operator peak RSS and CPU seconds.

Usage: .venv/bin/python benchmarks/rollout.py --workers 17 --control-planes 3 --max-unavailable 2
Run by hand; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kubernetes import client, config

from nodeos import codegen
from nodeos.models import crdgen
from nodeos.sandbox import cluster, processes, toolchain


def main() -> int:
    """Runs one benchmark rollout and prints its figures as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-planes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=17)
    parser.add_argument("--max-unavailable", type=int, default=2)
    parser.add_argument("--reboot-seconds", type=float, default=5.0)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sample the operator with py-spy during the rollout; write its raw stacks here and "
        "print the functions that used the most CPU",
    )
    args = parser.parse_args()
    paths = toolchain.ensure_built()
    workdir = Path(tempfile.mkdtemp(prefix="nodeos-bench-"))
    sandbox = cluster.Sandbox(workdir / "sandbox", paths)
    sandbox.start()
    children = []
    try:
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        ext = client.ApiextensionsV1Api(api)
        for kind in codegen.ROOT_KINDS:
            ext.create_custom_resource_definition(crdgen.crd_for(kind, kind.crd))
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "nodeos-system"}})
        time.sleep(2)
        env = dict(os.environ)
        sim = processes.start(
            "simulator",
            [
                sys.executable,
                "-m",
                "nodeos",
                "simulate",
                "--dir",
                str(workdir / "sim"),
                "--kubeconfig",
                str(sandbox.kubeconfig),
                "--control-planes",
                str(args.control_planes),
                "--workers",
                str(args.workers),
                "--reboot-seconds",
                str(args.reboot_seconds),
            ],
            workdir / "sim.log",
            env=env,
        )
        children.append(sim)
        while not (workdir / "sim" / "simulator.json").exists():
            time.sleep(0.2)
        core = client.CoreV1Api(api)
        total = args.control_planes + args.workers
        while sum(1 for n in core.list_node().items if _ready(n)) < total:
            time.sleep(0.5)
        metrics_port = processes.free_port()
        op = processes.start(
            "operator",
            [
                sys.executable,
                "-m",
                "nodeos",
                "run",
                "--kubeconfig",
                str(sandbox.kubeconfig),
                "--talosconfig",
                str(workdir / "sim" / "talosconfig"),
                "--namespace",
                "nodeos-system",
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                str(processes.free_port()),
                "--poll-interval",
                "0.2",
            ],
            workdir / "operator.log",
            env=env,
        )
        children.append(op)
        time.sleep(3)
        profiler = None
        if args.profile is not None:
            profiler = processes.start(
                "py-spy",
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(op.pid),
                    "--rate",
                    "50",
                    "--nonblocking",  # never pause the operator to read its stacks
                    "--format",
                    "raw",
                    "--output",
                    str(args.profile),
                ],
                workdir / "py-spy.log",
            )
            children.append(profiler)
        cpu_before = _cpu_seconds(op.pid)
        watched = {"operator": op.pid, "simulator": sim.pid}
        watched.update({child.name: child.pid for child in sandbox.children})
        process_cpu_before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
        requests_before = _metric(metrics_port, "nodeos_kube_requests_total")
        custom = client.CustomObjectsApi(api)
        started = time.monotonic()
        custom.create_cluster_custom_object(
            "nodeos.dev",
            "v1alpha1",
            "upgradeplans",
            {
                "apiVersion": "nodeos.dev/v1alpha1",
                "kind": "UpgradePlan",
                "metadata": {"name": "bench"},
                "spec": {
                    "target": {"version": "v1.13.9"},
                    "nodeSelector": {"matchLabels": {"type": "kwok"}},
                    "strategy": {"maxUnavailable": args.max_unavailable},
                },
            },
        )
        peak_rss = 0
        while True:
            peak_rss = max(peak_rss, _rss_mib(op.pid))
            plan = custom.get_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "upgradeplans", "bench"
            )
            if (plan.get("status") or {}).get("phase") in ("Completed", "Failed"):
                break
            time.sleep(0.25)
        wall = time.monotonic() - started
        process_cpu = {
            name: round(_cpu_seconds(pid) - process_cpu_before[name], 1)
            for name, pid in watched.items()
        }
        machine_cpu_s = wall * (os.cpu_count() or 1)
        phase = plan["status"]["phase"]
        batches = args.control_planes + math.ceil(args.workers / args.max_unavailable)
        ideal = batches * args.reboot_seconds
        mean_node = _metric(metrics_port, "nodeos_node_upgrade_duration_seconds_sum") / max(
            1.0, _metric(metrics_port, "nodeos_node_upgrade_duration_seconds_count")
        )
        requests = _metric(metrics_port, "nodeos_kube_requests_total") - requests_before
        latency = _histogram_quantiles(metrics_port, "nodeos_transition_latency_seconds")
        print(
            json.dumps(
                {
                    "nodes": total,
                    "maxUnavailable": args.max_unavailable,
                    "phase": phase,
                    "wall_s": round(wall, 1),
                    "simulated_node_time_s (reboot)": args.reboot_seconds,
                    "sum_of_node_times_s": round(args.reboot_seconds * total, 1),
                    "ideal_s (batches x node time)": round(ideal, 1),
                    "measured_mean_node_time_s (cordon->done)": round(mean_node, 2),
                    "overhead_ratio (wall / ideal)": round(wall / ideal, 3),
                    "transition_latency_s": latency,
                    "kube_requests_per_node": round(requests / total, 1),
                    "operator_peak_rss_mib": peak_rss,
                    "operator_cpu_s": round(_cpu_seconds(op.pid) - cpu_before, 1),
                    "operator_cpu_ms_per_node": round(
                        1000 * (_cpu_seconds(op.pid) - cpu_before) / total, 1
                    ),
                    # CPU-seconds of each process during the rollout, and its share of the
                    # machine (wall time x cores): who the bottleneck is
                    "cpu_s_by_process": process_cpu,
                    "machine_share_by_process_pct": {
                        name: round(100 * seconds / machine_cpu_s, 1)
                        for name, seconds in process_cpu.items()
                    },
                },
                indent=2,
            )
        )
        if profiler is not None and profiler.process is not None:
            profiler.process.send_signal(signal.SIGINT)  # py-spy writes what it sampled
            profiler.process.wait(timeout=60)
            print(_profile_summary(args.profile))
        return 0 if phase == "Completed" else 1
    finally:
        for child in reversed(children):
            processes.stop(child)
        sandbox.stop()
        cluster.remove_workdir(workdir)


def _profile_summary(path: Path, top: int = 15) -> str:
    """The functions most often on CPU (self) and on the stack (inclusive), from raw stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"profile: {total} samples (py-spy, 50 per second, threads on CPU only)"]
    for title, table in (("self", own), ("inclusive", inclusive)):
        lines.append(f"top {top} by {title}:")
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def _ready(node: object) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _histogram_quantiles(port: int, name: str) -> dict[str, float | None]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.split()[-1])))
    count = buckets[-1][1] if buckets else 0
    result: dict[str, float | None] = {"count": count}
    for q in (0.5, 0.99):
        result[f"p{int(q * 100)}_at_most"] = next(
            (b for b, c in buckets if count and c >= q * count), None
        )
    return result


def _rss_mib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    raise SystemExit(main())
