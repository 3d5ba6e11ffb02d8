"""``nodeos plan …`` (also ``kubectl nodeos …``): UpgradePlans for people at a terminal.

- ``preview FILE``: what the plan would do against the live cluster, without applying it: the
  selected nodes, those already on the target, the batches in order, the gates and windows that
  apply, and an estimate of the time it takes.
- ``status NAME [--watch]``: a per-node table and a progress bar.
- ``pause``, ``resume``, ``retry``, ``approve`` (the canary): the same edits a person would make
  with ``kubectl patch`` or ``kubectl annotate``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO, cast

import yaml
from kubernetes import client, config
from pydantic import ValidationError

from nodeos.core import planner, windows
from nodeos.core.canary import APPROVE_ANNOTATION
from nodeos.core.nodes import matches, view_of
from nodeos.core.records import records_on
from nodeos.engine.rollout import RETRY_ANNOTATION
from nodeos.models.common import parse_duration
from nodeos.models.upgradeplan import UpgradePlanSpec

GROUP, VERSION, PLURAL = "nodeos.dev", "v1alpha1", "upgradeplans"


def add_commands(commands: Any) -> None:
    """Registers ``plan`` and its subcommands on an argparse subparsers object."""
    plan = commands.add_parser("plan", help="preview, follow and steer UpgradePlans")
    plan.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: KUBECONFIG)")
    sub = plan.add_subparsers(title="plan commands")
    plan.set_defaults(run=lambda _: _usage(plan))

    preview = sub.add_parser("preview", help="what a plan file would do here, without applying")
    preview.add_argument("file", type=Path, help="an UpgradePlan manifest")
    preview.add_argument(
        "--minutes-per-node",
        type=float,
        default=5.0,
        help="time one node takes (drain, install, reboot, verify) for the estimate",
    )
    preview.set_defaults(run=_preview)

    status = sub.add_parser("status", help="a plan's nodes and progress")
    status.add_argument("name", help="the UpgradePlan")
    status.add_argument("--watch", "-w", action="store_true", help="refresh until it ends")
    status.set_defaults(run=_status)

    for name, run, text in (
        ("pause", _pause, "start no new node (in-flight nodes finish)"),
        ("resume", _resume, "start nodes again"),
        ("retry", _retry, "retry failed nodes (annotates nodeos.dev/retry=true)"),
        ("approve", _approve, "let the rest follow the canary (annotates nodeos.dev/approve)"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("name", help="the UpgradePlan")
        command.set_defaults(run=run)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _api(args: argparse.Namespace) -> client.ApiClient:
    if args.kubeconfig is not None:
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(args.kubeconfig)
        )
        return api
    try:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


# -- preview -----------------------------------------------------------------------------------


def _preview(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        document = yaml.safe_load(args.file.read_text())
        spec = UpgradePlanSpec.model_validate((document or {}).get("spec") or {})
    except (OSError, yaml.YAMLError) as error:
        print(f"nodeos plan preview: {args.file}: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(p) for p in ("spec", *problem["loc"]))
            print(f"nodeos plan preview: {where}: {problem['msg']}", file=sys.stderr)
        return 2
    name = ((document.get("metadata") or {}).get("name")) or args.file.stem
    reply: Any = client.CoreV1Api(_api(args)).list_node(_preload_content=False)
    listed = cast(dict[str, Any], json.loads(reply.data))
    nodes = [view_of(n["metadata"]["name"], n) for n in listed["items"]]
    out.write(preview_text(name, spec, nodes, datetime.datetime.now(datetime.UTC), args))
    return 0


def preview_text(
    name: str,
    spec: UpgradePlanSpec,
    nodes: list[Any],
    now: datetime.datetime,
    args: argparse.Namespace,
) -> str:
    """The preview, as text (the planner's own rules, on the live nodes)."""
    selected = [n for n in nodes if matches(spec.node_selector.to_api(), n.labels)]
    decision = planner.plan_step(spec, {}, [], selected, now)
    budget = planner.max_unavailable(spec.strategy.max_unavailable, len(selected))
    lines = [
        f"UpgradePlan {name}: {len(selected)} node(s) selected, "
        f"{len(decision.up_to_date)} already on {spec.target.version}, maxUnavailable {budget}",
    ]
    if not selected:
        lines.append("  nothing selected: check spec.nodeSelector against the nodes' labels")
    for index, batch in enumerate(decision.batches, start=1):
        lines.append(f"  batch {index:>3}: {', '.join(batch)}")
    if decision.total_batches > len(decision.batches):
        lines.append(f"  ... {decision.total_batches - len(decision.batches)} more batch(es)")
    out_of_service = [n.name for n in selected if n.unavailable]
    if out_of_service:
        lines.append(f"  already out of service (count against the budget): {out_of_service}")
    lines += _gates(spec, now)
    if decision.waiting is not None and decision.waiting.reason != "OutsideMaintenanceWindow":
        lines.append(f"  would wait now: {decision.waiting.reason}: {decision.waiting.message}")
    minutes = decision.total_batches * args.minutes_per_node
    if spec.strategy.canary.count and spec.strategy.canary.soak:
        minutes += parse_duration(spec.strategy.canary.soak).total_seconds() / 60
    lines.append(
        f"  estimate: {decision.total_batches} batch(es) x {args.minutes_per_node:g} min "
        f"= about {minutes:.0f} min of rollout time (windows not counted)"
    )
    return "\n".join(lines) + "\n"


def _gates(spec: UpgradePlanSpec, now: datetime.datetime) -> list[str]:
    lines = []
    if spec.strategy.canary.count:
        canary = spec.strategy.canary
        then = "a person approves" if canary.pause_after else f"a soak of {canary.soak or '0s'}"
        lines.append(f"  canary: the first {canary.count} node(s) alone, then {then}")
    for check in spec.health_checks:
        lines.append(
            f"  health check ({check.when}): {check.kind} {check.name or ''}: {check.expression}"
        )
    if spec.prometheus is not None:
        lines.append(f"  prometheus gate: {spec.prometheus.url}")
    if spec.maintenance_windows:
        try:
            if windows.is_open(spec.maintenance_windows, now):
                lines.append("  maintenance window: open now")
            else:
                upcoming = windows.next_opening(spec.maintenance_windows, now)
                when = f"{upcoming:%Y-%m-%d %H:%M}Z" if upcoming else "never"
                lines.append(f"  maintenance window: closed; next opens {when}")
        except windows.WindowError as error:
            lines.append(f"  maintenance window: invalid: {error}")
    if spec.paused:
        lines.append("  spec.paused is true: nothing would start")
    return lines


# -- status ------------------------------------------------------------------------------------


def _status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    api = _api(args)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    while True:
        try:
            plan = cast(
                dict[str, Any], custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, args.name)
            )
            reply: Any = core.list_node(_preload_content=False)
        except client.ApiException as error:
            print(f"nodeos plan status: {args.name}: {error.reason}", file=sys.stderr)
            return 1
        listed = json.loads(reply.data)["items"]
        found = records_on(
            ((n["metadata"]["name"], n["metadata"].get("annotations") or {}) for n in listed),
            args.name,
            plan["metadata"].get("uid", ""),
        )
        text = status_text(plan, {name: record.to_api() for name, record in found.items()})
        out.write(("\033[2J\033[H" if args.watch and out.isatty() else "") + text)
        out.flush()
        phase = (plan.get("status") or {}).get("phase")
        if not args.watch or phase in ("Completed", "Failed"):
            return 0
        time.sleep(2)


def status_text(plan: dict[str, Any], records: Mapping[str, dict[str, Any]]) -> str:
    """A plan's summary line, progress bar and a row per node record (from the Nodes)."""
    status = plan.get("status") or {}
    counts = status.get("counts") or {}
    total, updated = counts.get("total", 0), counts.get("updated", 0)
    width = 30
    filled = int(width * updated / total) if total else 0
    bar = "#" * filled + "." * (width - filled)
    lines = [
        f"{plan['metadata']['name']}: {status.get('phase', 'Pending')} - "
        f"{status.get('message', '')}",
        f"[{bar}] {updated}/{total} done, {counts.get('inProgress', 0)} in progress, "
        f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending",
        f"{'NODE':<24} {'PHASE':<13} {'SINCE':<20} {'ATTEMPT':<7} REASON / MESSAGE",
    ]
    legacy = {r["name"]: r for r in status.get("nodes") or []}  # by earlier nodeos versions
    for _, record in sorted((legacy | dict(records)).items()):
        note = " ".join(x for x in (record.get("reason"), record.get("message")) if x)
        lines.append(
            f"{record['name']:<24} {record['phase']:<13} {str(record.get('since', ''))[:19]:<20} "
            f"{record.get('attempt') or '':<7} {note[:80]}"
        )
    return "\n".join(lines) + "\n"


# -- steering ----------------------------------------------------------------------------------


def _patch(args: argparse.Namespace, body: dict[str, Any], said: str) -> int:
    custom = client.CustomObjectsApi(_api(args))
    try:
        custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, args.name, body)
    except client.ApiException as error:
        print(f"nodeos plan: {args.name}: {error.reason}", file=sys.stderr)
        return 1
    print(f"upgradeplan/{args.name} {said}")
    return 0


def _pause(args: argparse.Namespace) -> int:
    return _patch(args, {"spec": {"paused": True}}, "paused")


def _resume(args: argparse.Namespace) -> int:
    return _patch(args, {"spec": {"paused": False}}, "resumed")


def _retry(args: argparse.Namespace) -> int:
    body = {"metadata": {"annotations": {RETRY_ANNOTATION: "true"}}}
    return _patch(args, body, "will retry its failed nodes")


def _approve(args: argparse.Namespace) -> int:
    body = {"metadata": {"annotations": {APPROVE_ANNOTATION: "true"}}}
    return _patch(args, body, "approved: the rest follows the canary")
