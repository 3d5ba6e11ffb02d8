"""Rollout benchmark: how much time and load the operator adds on top of the nodes themselves.

Runs the sandbox, the simulator with N nodes (reboot time T, no faults) and the operator, with
an optional workload (``--pods-per-worker``: a Deployment behind a PodDisruptionBudget, so
drains move pods), applies one UpgradePlan and prints:
- wall time vs the ideal (control-plane nodes one at a time, workers ceil(W / maxUnavailable)
  batches, each batch taking one node's own time), and their ratio;
- transition latency (slot freed -> next node cordoned, per slot) from the operator's histogram;
- every request the operator made, from the API server's audit log (the operator runs as its
  own ServiceAccount, the only user the audit policy logs): per node, by verb and resource, the
  bytes it wrote per node and its largest write;
- operator peak RSS and CPU seconds, and each process's share of the machine;
- whether every node ended on the target.
The fake nodes heartbeat (renew their Leases) at the rate of a 200-node cluster unless
``--node-lease-seconds`` says otherwise: each real kubelet renews from its own machine every
10 s, and thousands of them on one 2-core machine would measure the sandbox, not the operator.
It writes the figures as JSON and an SVG (nodes in flight and done over time, and each node's
phases) to ``--out`` (default ``bench-results/``).

``--floor`` runs ``benchmarks/floor.py`` on the same fleet instead of the operator: the bare
calls an upgrade needs, with no safety at all, as the same ServiceAccount, so its wall time,
latency, requests and CPU are this machine's floor for the operator's (``floor-*.json``).

Usage: .venv/bin/python benchmarks/rollout.py --workers 17 --control-planes 3 --max-unavailable 2
Run by hand; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from nodeos import codegen
from nodeos.core.records import SUFFIX
from nodeos.models import crdgen
from nodeos.sandbox import cluster, kwok, processes, toolchain

NAMESPACE = "nodeos-system"
ACCOUNT = "nodeos-bench"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
TARGET = "v1.13.9"
# Log only the operator's requests, once each, with the bodies of its writes
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Request", "users": [USER], "verbs": ["create", "update", "patch", "delete"]},
        {"level": "Metadata", "users": [USER]},
        {"level": "None"},
    ],
}


def main() -> int:
    """Runs one benchmark rollout and prints its figures as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-planes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=17)
    parser.add_argument("--max-unavailable", type=int, default=2)
    parser.add_argument("--reboot-seconds", type=float, default=5.0)
    parser.add_argument(
        "--pods-per-worker",
        type=int,
        default=0,
        help="a Deployment with this many pods per worker behind a PDB (maxUnavailable 10%%)",
    )
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop waiting for the rollout after this long and report the figures so far "
        "(the run then exits 1)",
    )
    parser.add_argument(
        "--node-lease-seconds",
        type=int,
        default=None,
        help="the fake nodes' Lease duration, renewed every quarter of it (default: 40 s, as a "
        "kubelet's, up to 200 nodes, and longer in proportion beyond: a 200-node cluster's "
        "heartbeat rate; 40 gives every node a real kubelet's rate)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sample the operator with py-spy during the rollout; write its raw stacks here and "
        "print the functions that used the most CPU",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="run the bare floor rollout (benchmarks/floor.py) instead of the operator",
    )
    args = parser.parse_args()
    if args.floor and (args.pods_per_worker or args.profile):
        parser.error("--floor runs no workload and no profiler")
    paths = toolchain.ensure_built()
    workdir = Path(tempfile.mkdtemp(prefix="nodeos-bench-"))
    lease_s = args.node_lease_seconds or _lease_seconds(args.control_planes + args.workers)
    sandbox = cluster.Sandbox(
        workdir / "sandbox", paths, audit_policy=AUDIT_POLICY, node_lease_s=lease_s
    )
    sandbox.start()
    children = []
    try:
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        ext = client.ApiextensionsV1Api(api)
        for kind in codegen.ROOT_KINDS:
            ext.create_custom_resource_definition(crdgen.crd_for(kind, kind.crd))
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        time.sleep(2)
        operator_kubeconfig = _operator_kubeconfig(api, sandbox.kubeconfig, workdir)
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
        last_shown = 0.0
        while (ready := sum(1 for n in core.list_node().items if _ready(n))) < total:
            if time.monotonic() - last_shown >= 5:
                print(f"[bench] simulated nodes ready: {ready}/{total}", flush=True)
                last_shown = time.monotonic()
            time.sleep(0.5)
        if args.floor:
            return _run_floor(args, sandbox, workdir, operator_kubeconfig, sim, children, lease_s)
        if args.pods_per_worker:
            _deploy_workload(api, args.workers * args.pods_per_worker)
        metrics_port = processes.free_port()
        op = processes.start(
            "operator",
            [
                sys.executable,
                "-m",
                "nodeos",
                "run",
                "--kubeconfig",
                str(operator_kubeconfig),
                "--talosconfig",
                str(workdir / "sim" / "talosconfig"),
                "--namespace",
                NAMESPACE,
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
        started_at = datetime.datetime.now(datetime.UTC)
        custom.create_cluster_custom_object(
            "nodeos.dev",
            "v1alpha1",
            "upgradeplans",
            {
                "apiVersion": "nodeos.dev/v1alpha1",
                "kind": "UpgradePlan",
                "metadata": {"name": "bench"},
                "spec": {
                    "target": {"version": TARGET},
                    "nodeSelector": {"matchLabels": {"type": "kwok"}},
                    "strategy": {"maxUnavailable": args.max_unavailable},
                },
            },
        )
        peak_rss = 0
        last_shown = 0.0
        samples: list[tuple[float, int, int]] = []  # (seconds, in flight, updated)
        while True:
            peak_rss = max(peak_rss, _rss_mib(op.pid))
            plan = custom.get_cluster_custom_object(
                "nodeos.dev", "v1alpha1", "upgradeplans", "bench"
            )
            status = plan.get("status") or {}
            samples.append(
                (
                    time.monotonic() - started,
                    len(status.get("inFlight") or []),
                    (status.get("counts") or {}).get("updated", 0),
                )
            )
            if status.get("phase") in ("Completed", "Failed"):
                break
            if args.give_up_after is not None and samples[-1][0] > args.give_up_after:
                print(f"[bench] gave up after {args.give_up_after:.0f} s", flush=True)
                break
            if samples[-1][0] - last_shown >= 5:
                last_shown = samples[-1][0]
                print(
                    f"[bench] {last_shown:6.1f} s: {samples[-1][2]}/{total} updated, "
                    f"{samples[-1][1]} in flight, operator CPU "
                    f"{_cpu_seconds(op.pid) - cpu_before:.1f} s, RSS {peak_rss} MiB",
                    flush=True,
                )
            time.sleep(0.25)
        wall = time.monotonic() - started
        ended_at = datetime.datetime.now(datetime.UTC)
        on_target = sum(
            1 for n in core.list_node().items if TARGET in (n.status.node_info.os_image or "")
        )
        process_cpu = {
            name: round(_cpu_seconds(pid) - process_cpu_before[name], 1)
            for name, pid in watched.items()
        }
        machine_cpu_s = wall * (os.cpu_count() or 1)
        phase = plan["status"]["phase"]
        ideal = _ideal_seconds(args)
        mean_node = _metric(metrics_port, "nodeos_node_upgrade_duration_seconds_sum") / max(
            1.0, _metric(metrics_port, "nodeos_node_upgrade_duration_seconds_count")
        )
        requests = _metric(metrics_port, "nodeos_kube_requests_total") - requests_before
        latency = _histogram_quantiles(metrics_port, "nodeos_transition_latency_seconds")
        os_api_calls = _counts_by_label(
            metrics_port, "nodeos_osapi_call_duration_seconds_count", "method"
        )
        time.sleep(2)  # the API server writes its audit log in batches
        audit, timeline = _audit_figures(sandbox.audit_log, started_at, ended_at, total)
        figures = {
            "nodes": total,
            "pods_per_worker": args.pods_per_worker,
            "nodes_on_target": on_target,
            "maxUnavailable": args.max_unavailable,
            "phase": phase,
            "wall_s": round(wall, 1),
            "simulated_node_time_s (reboot)": args.reboot_seconds,
            "node_lease_s (renewed every quarter)": lease_s,
            "sum_of_node_times_s": round(args.reboot_seconds * total, 1),
            "ideal_s (batches x node time)": round(ideal, 1),
            "measured_mean_node_time_s (cordon->done)": round(mean_node, 2),
            "overhead_ratio (wall / ideal)": round(wall / ideal, 3),
            "transition_latency_s": latency,
            "engine_requests_per_node": round(requests / total, 1),
            "os_api_calls_per_node": {
                "total": round(sum(os_api_calls.values()) / total, 1),
                **{method: round(n / total, 2) for method, n in sorted(os_api_calls.items())},
            },
            "operator_requests (audit log)": audit,
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
        }
        print(json.dumps(figures, indent=2))
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"rollout-{total}-{started_at:%Y%m%dT%H%M%SZ}"
        stem.with_suffix(".json").write_text(
            json.dumps({**figures, "samples": samples, "phases": timeline}, indent=1)
        )
        stem.with_suffix(".svg").write_text(_plot(samples, timeline, wall, total))
        print(f"written: {stem}.json, {stem}.svg")
        if profiler is not None and profiler.process is not None:
            profiler.process.send_signal(signal.SIGINT)  # py-spy writes what it sampled
            profiler.process.wait(timeout=60)
            print(_profile_summary(args.profile))
        return 0 if phase == "Completed" and on_target == total else 1
    finally:
        for child in reversed(children):
            processes.stop(child)
        sandbox.stop()
        cluster.remove_workdir(workdir)


def _run_floor(
    args: argparse.Namespace,
    sandbox: cluster.Sandbox,
    workdir: Path,
    kubeconfig: Path,
    sim: processes.Child,
    children: list[processes.Child],
    lease_s: int,
) -> int:
    """Runs ``floor.py`` on the ready fleet as the operator's ServiceAccount; prints figures."""
    total = args.control_planes + args.workers
    figures_path = workdir / "floor" / "figures.json"
    progress_path = figures_path.with_name("progress.json")
    watched = {"simulator": sim.pid, **{c.name: c.pid for c in sandbox.children}}
    process_cpu_before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC)
    floor = processes.start(
        "floor",
        [
            sys.executable,
            str(Path(__file__).with_name("floor.py")),
            "--kubeconfig",
            str(kubeconfig),
            "--talosconfig",
            str(workdir / "sim" / "talosconfig"),
            "--out",
            str(figures_path),
            "--target",
            TARGET,
            "--max-unavailable",
            str(args.max_unavailable),
            "--reboot-seconds",
            str(args.reboot_seconds),
        ],
        workdir / "floor.log",
    )
    children.append(floor)
    samples: list[tuple[float, int, int]] = []
    last_shown = 0.0
    while floor.alive():
        if args.give_up_after is not None and time.monotonic() - started > args.give_up_after:
            print(f"[bench] gave up after {args.give_up_after:.0f} s", flush=True)
            processes.stop(floor)
            break
        try:
            seconds, in_flight, done = json.loads(progress_path.read_text())
            samples.append((seconds, in_flight, done))
        except (OSError, ValueError):
            pass  # not started yet
        if samples and samples[-1][0] - last_shown >= 5:
            last_shown = samples[-1][0]
            print(
                f"[bench] floor {last_shown:6.1f} s: {samples[-1][2]}/{total} done, "
                f"{samples[-1][1]} in flight",
                flush=True,
            )
        time.sleep(0.25)
    ended_at = datetime.datetime.now(datetime.UTC)
    if not figures_path.exists():
        print(f"[bench] the floor wrote no figures; its log:\n{floor.log.read_text()[-4000:]}")
        return 1
    result = json.loads(figures_path.read_text())
    wall = result["wall_s"]
    process_cpu = {
        name: round(_cpu_seconds(pid) - process_cpu_before[name], 1)
        for name, pid in watched.items()
    }
    process_cpu["floor"] = round(result["cpu_s"], 1)
    machine_cpu_s = (time.monotonic() - started) * (os.cpu_count() or 1)
    ideal = _ideal_seconds(args)
    handovers = sorted(result["handovers_s"])
    polls = result["boot_polls"]
    time.sleep(2)  # the API server writes its audit log in batches
    audit, _ = _audit_figures(sandbox.audit_log, started_at, ended_at, total)
    spans = [p["uncordon"] - p["started"] for p in result["phases"].values() if "uncordon" in p]
    figures = {
        "run": "floor (benchmarks/floor.py: bare calls, no safety)",
        "nodes": total,
        "nodes_done": result["done"],
        "maxUnavailable": args.max_unavailable,
        "wall_s": round(wall, 1),
        "simulated_node_time_s (reboot)": args.reboot_seconds,
        "node_lease_s (renewed every quarter)": lease_s,
        "ideal_s (batches x node time)": round(ideal, 1),
        "measured_mean_node_time_s (cordon->done)": round(sum(spans) / max(1, len(spans)), 2),
        "overhead_ratio (wall / ideal)": round(wall / ideal, 3),
        "transition_latency_s (exact, per slot)": {
            "count": len(handovers),
            "p50": _quantile(handovers, 0.5),
            "p99": _quantile(handovers, 0.99),
            "max": round(handovers[-1], 3) if handovers else None,
        },
        "boot_id_reads_after_reboot_per_node": round(sum(polls) / max(1, len(polls)), 2),
        "floor_requests (audit log)": audit,
        "floor_cpu_s": round(result["cpu_s"], 1),
        "floor_cpu_ms_per_node": round(1000 * result["cpu_s"] / total, 1),
        "cpu_s_by_process": process_cpu,
        "machine_share_by_process_pct": {
            name: round(100 * seconds / machine_cpu_s, 1) for name, seconds in process_cpu.items()
        },
    }
    print(json.dumps(figures, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"floor-{total}-{started_at:%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".json").write_text(
        json.dumps({**figures, "samples": samples, "phases": result["phases"]}, indent=1)
    )
    timeline = _floor_timeline(result["phases"])
    stem.with_suffix(".svg").write_text(_plot(samples, timeline, wall, total))
    print(f"written: {stem}.json, {stem}.svg")
    return 0 if result["done"] == total else 1


# the floor's steps, as the phases the plot colours (each phase starts when the step before ends)
_FLOOR_PHASES = (
    ("started", "Cordoning"),
    ("cordon", "Upgrading"),
    ("reboot", "Rebooting"),
    ("back", "Verifying"),
    ("version", "Uncordoning"),
    ("uncordon", "Done"),
)


def _floor_timeline(phases: dict[str, dict[str, float]]) -> dict[str, list[tuple[float, str]]]:
    """Each node's phases in the plot's terms, from the floor's step times."""
    return {
        name: [(steps[step], phase) for step, phase in _FLOOR_PHASES if step in steps]
        for name, steps in phases.items()
    }


def _ideal_seconds(args: argparse.Namespace) -> float:
    """Control planes one at a time, then the workers in batches, each one node's reboot."""
    batches = args.control_planes + math.ceil(args.workers / args.max_unavailable)
    return float(batches * args.reboot_seconds)


def _quantile(values: list[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted ``values``."""
    if not values:
        return None
    return round(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 3)


def _operator_kubeconfig(api: client.ApiClient, admin: Path, workdir: Path) -> Path:
    """A kubeconfig for the operator's own ServiceAccount (cluster-admin: we count, not check)."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": ACCOUNT}})
    client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
        {
            "metadata": {"name": ACCOUNT},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}],
        }
    )
    token = core.create_namespaced_service_account_token(
        ACCOUNT, NAMESPACE, {"spec": {"expirationSeconds": 24 * 3600}}
    ).status.token
    document = yaml.safe_load(admin.read_text())
    document["users"] = [{"name": ACCOUNT, "user": {"token": token}}]
    document["contexts"][0]["context"]["user"] = ACCOUNT
    path = workdir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return path


def _deploy_workload(api: client.ApiClient, replicas: int) -> None:
    """``replicas`` pods over the workers behind a PDB, and waits until they are Ready."""
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "bench"}})
    labels = {"app": "bench"}
    client.AppsV1Api(api).create_namespaced_deployment(
        "bench",
        {
            "metadata": {"name": "bench"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"type": "kwok"},  # (control planes are tainted)
                        "tolerations": [kwok.FAKE_NODE_TOLERATION],
                        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                    },
                },
            },
        },
    )
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        "bench",
        {
            "metadata": {"name": "bench"},
            "spec": {"maxUnavailable": "10%", "selector": {"matchLabels": labels}},
        },
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod("bench").items
        ready = sum(
            1
            for pod in pods
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        )
        print(f"[bench] workload: {ready}/{replicas} pods ready", flush=True)
        if ready >= replicas:
            return
        time.sleep(5)
    raise TimeoutError(f"the workload's {replicas} pods did not become Ready in 10 minutes")


def _audit_figures(
    log: Path, start: datetime.datetime, end: datetime.datetime, nodes: int
) -> tuple[dict[str, Any], dict[str, list[tuple[float, str]]]]:
    """The operator's requests during the rollout, and each node's phases as it wrote them."""
    by_kind: Counter[str] = Counter()
    by_agent: Counter[str] = Counter()
    written = largest = total = 0
    timeline: dict[str, list[tuple[float, str]]] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("user", {}).get("username") != USER:
            continue
        at = datetime.datetime.fromisoformat(entry["requestReceivedTimestamp"])
        if not start <= at <= end:
            continue
        total += 1
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource", "?") + (
            "/" + ref["subresource"] if ref.get("subresource") else ""
        )
        by_kind[f"{entry['verb']} {resource}"] += 1
        by_agent[entry.get("userAgent", "?").split("/")[0]] += 1
        body = entry.get("requestObject")
        if body is not None:
            size = len(json.dumps(body, separators=(",", ":")))
            written += size
            largest = max(largest, size)
            for value in _records_written(body):
                phase = json.loads(value).get("phase", "?")
                seconds = (at - start).total_seconds()
                timeline.setdefault(ref.get("name", "?"), []).append((seconds, phase))
    figures = {
        "requests": total,
        "requests_per_node": round(total / nodes, 1),
        "bytes_written_per_node": round(written / nodes),
        "largest_write_bytes": largest,
        "by_verb_and_resource": dict(by_kind.most_common()),
        "by_client": dict(by_agent.most_common()),
        "note": "watches still open at the end are not counted (a handful)",
    }
    return figures, timeline


def _records_written(body: Any) -> list[str]:
    """The node records a write carries.

    In a merge patch's annotations, or in a JSON patch's operations (the uncordon).
    """
    if isinstance(body, list):
        return [
            str(op["value"])
            for op in body
            if isinstance(op, dict)
            and op.get("op") == "add"
            and str(op.get("path", "")).endswith(SUFFIX.replace("/", "~1"))
            and op.get("value")
        ]
    metadata = body.get("metadata") if isinstance(body, dict) else None
    annotations = (metadata or {}).get("annotations") or {}
    return [str(v) for k, v in annotations.items() if k.endswith(SUFFIX) and v]


_COLOURS = {
    "Cordoning": "#f0ad4e",
    "Draining": "#d9534f",
    "Upgrading": "#5bc0de",
    "Rebooting": "#337ab7",
    "Verifying": "#9b59b6",
    "Uncordoning": "#8e9e3b",
    "Done": "#5cb85c",
}


def _plot(
    samples: list[tuple[float, int, int]],
    timeline: dict[str, list[tuple[float, str]]],
    wall: float,
    total: int,
) -> str:
    """An SVG: nodes in flight and done over time (top), and each node's phases (bottom)."""
    width, top_h, row_h = 900.0, 200.0, max(0.2, min(6.0, 600.0 / max(1, len(timeline))))
    height = top_h + 40 + row_h * len(timeline) + 20
    x = lambda seconds: 50 + (width - 60) * seconds / max(wall, 1e-9)  # noqa: E731
    peak = max([1, *(s[1] for s in samples)])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="50" y="14">in flight (red, peak {peak}) and done (green, of {total}) over '
        f"{wall:.0f} s</text>",
    ]
    for series, colour, scale in ((1, "#d9534f", peak), (2, "#5cb85c", total)):
        points = " ".join(
            f"{x(s[0]):.1f},{top_h - (top_h - 30) * s[series] / max(scale, 1):.1f}" for s in samples
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" points="{points}"/>')
    parts.append(f'<text x="50" y="{top_h + 30:.0f}">each node\'s phases, by first write</text>')
    for row, (name, phases) in enumerate(sorted(timeline.items(), key=lambda kv: kv[1][0][0])):
        y = top_h + 40 + row * row_h
        for (at, phase), following in zip(phases, [*phases[1:], (wall, "")], strict=True):
            if phase == "Done":
                continue
            span = max(0.5, x(following[0]) - x(at))
            parts.append(
                f'<rect x="{x(at):.1f}" y="{y:.1f}" width="{span:.1f}" '
                f'height="{row_h:.1f}" fill="{_COLOURS.get(phase, "#999")}"><title>{name} '
                f"{phase}</title></rect>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


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


def _lease_seconds(nodes: int) -> int:
    """A Lease duration giving ``nodes`` fake nodes the heartbeat rate of 200 real kubelets."""
    return max(kwok.NODE_LEASE_SECONDS, math.ceil(kwok.NODE_LEASE_SECONDS * nodes / 200))


def _ready(node: object) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _counts_by_label(port: int, name: str, label: str) -> dict[str, float]:
    """A counter's samples by one label's value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="' in line:
            value = line.split(f'{label}="')[1].split('"')[0]
            found[value] = found.get(value, 0.0) + float(line.split()[-1])
    return found


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
