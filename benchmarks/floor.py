"""The floor: the fastest rollout this machine allows, with none of the operator's safety.

A bare loop makes, for each node, only the calls an upgrade cannot do without, through the
same libraries as the operator (aiohttp for the API server, grpc.aio with mTLS for the OS
API): an unguarded merge patch that cordons, a boot ID read, the install (ImageService.Pull +
LifecycleService.Upgrade), Reboot, a wait of the simulated reboot time, then a boot ID read
every 0.1 s until it changed, a Version read that must report the target, and an uncordon.
Control-plane nodes go one at a time, then the workers through ``--max-unavailable`` slots.
No plan, no ledger, no drain, no Ready wait, no Events, no retries, no status: nothing that
makes a rollout safe or visible. Its wall time and CPU are what the sandbox, the simulator and
Python's gRPC cost on this machine, a lower bound for any operator built on the same parts;
``benchmarks/rollout.py --floor`` runs it on the same fleet as the operator's runs.

It writes its figures to ``--out`` as JSON (and progress, ``[seconds, in flight, done]``, to
``progress.json`` beside it every quarter second).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from nodeos.adapters.http import JsonSession
from nodeos.adapters.osapi.client import TalosClient
from nodeos.adapters.osapi.talosconfig import FileSource
from nodeos.ports.osapi import NodeTarget, OsApiError

_POLL_S = 0.1  # boot ID reads after the reboot time has passed
_CONNECTIONS = 200  # to the API server; far more than the writes in flight
_MERGE_PATCH = "application/merge-patch+json"
_CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


@dataclass
class NodeTimes:
    """When each of one node's steps ended, in seconds from the start of the rollout."""

    name: str
    slot: int
    started: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    boot_polls: int = 0


class Floor:
    """One bare rollout over the nodes it is given."""

    def __init__(
        self,
        http: JsonSession,
        talos: TalosClient,
        endpoint: str,
        target: str,
        reboot_s: float,
    ) -> None:
        self.http = http
        self.talos = talos
        self.endpoint = endpoint
        self.target = target
        self.reboot_s = reboot_s
        self.started: float | None = None
        self.times: list[NodeTimes] = []
        self.in_flight = 0

    def now(self) -> float:
        """Seconds since the rollout began (0 before)."""
        return 0.0 if self.started is None else time.monotonic() - self.started

    async def run(
        self, control_planes: list[tuple[str, str]], workers: list[tuple[str, str]], slots: int
    ) -> None:
        """Upgrades the control planes one by one, then the workers ``slots`` at a time."""
        self.started = time.monotonic()
        for name, address in control_planes:
            await self._upgrade(name, address, slot=0)
        queue = list(reversed(workers))

        async def slot(number: int) -> None:
            while queue:
                name, address = queue.pop()
                await self._upgrade(name, address, slot=number)

        await asyncio.gather(*(slot(n) for n in range(slots)))

    async def _upgrade(self, name: str, address: str, slot: int) -> None:
        record = NodeTimes(name, slot, started=self.now())
        self.times.append(record)
        self.in_flight += 1
        target = NodeTarget(name=name, endpoint=self.endpoint, route=address)

        def step(label: str) -> None:
            record.steps[label] = self.now()

        await self._patch(name, {"spec": {"unschedulable": True}})
        step("cordon")
        before = await self.talos.boot_id(target)
        step("boot_id")
        await self.talos.install(target, f"ghcr.io/siderolabs/installer:{self.target}")
        step("install")
        await self.talos.reboot(target)
        step("reboot")
        await asyncio.sleep(self.reboot_s)
        while True:
            record.boot_polls += 1
            try:
                if await self.talos.boot_id(target, rebooting=True) != before:
                    break
            except OsApiError:
                pass  # still down
            await asyncio.sleep(_POLL_S)
        step("back")
        running = (await self.talos.version(target)).tag
        if running != self.target:
            raise RuntimeError(f"{name} runs {running} after its upgrade, not {self.target}")
        step("version")
        await self._patch(name, {"spec": {"unschedulable": None}})
        step("uncordon")
        self.in_flight -= 1

    async def _patch(self, node: str, body: dict[str, Any]) -> None:
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "Content-Type": _MERGE_PATCH,
        }
        status, reason, payload = await self.http.request(
            "PATCH", f"/api/v1/nodes/{node}", None, json.dumps(body).encode(), headers
        )
        if status != 200:
            raise RuntimeError(f"patching Node {node}: {status} {reason}: {payload[:200]!r}")


async def _report_progress(floor: Floor, path: Path, total: int) -> None:
    """Writes ``[seconds, in flight, done]`` to ``path`` every quarter second."""
    while True:
        done = sum(1 for t in floor.times if "uncordon" in t.steps)
        await asyncio.to_thread(_replace, path, json.dumps([floor.now(), floor.in_flight, done]))
        if done >= total:
            return
        await asyncio.sleep(0.25)


def _replace(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` at once (a reader never sees half of it)."""
    partial = path.with_suffix(".tmp")
    partial.write_text(text)
    os.replace(partial, path)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(args.kubeconfig), client_configuration=configuration
    )
    http = JsonSession(configuration, _CONNECTIONS)
    source = FileSource(args.talosconfig)
    await source.load()
    talos = TalosClient(source)
    headers = {"Accept": "application/json"}
    status, reason, payload = await http.request(
        "GET", "/api/v1/nodes", {"labelSelector": args.selector}, None, headers
    )
    if status != 200:
        raise RuntimeError(f"listing Nodes: {status} {reason}")
    nodes: list[dict[str, Any]] = json.loads(payload)["items"]
    control_planes: list[tuple[str, str]] = []
    workers: list[tuple[str, str]] = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        name = str(node["metadata"]["name"])
        addresses = node["status"].get("addresses") or []
        address = next(str(a["address"]) for a in addresses if a["type"] == "InternalIP")
        is_cp = _CONTROL_PLANE in (node["metadata"].get("labels") or {})
        (control_planes if is_cp else workers).append((name, address))
    floor = Floor(http, talos, source.endpoints()[0], args.target, args.reboot_seconds)
    cpu_before = time.process_time()
    progress = asyncio.create_task(
        _report_progress(floor, args.out.with_name("progress.json"), len(nodes))
    )
    try:
        await floor.run(control_planes, workers, args.max_unavailable)
        await progress
    finally:
        progress.cancel()
        await http.close()
        await talos.close()
    wall = floor.now()
    by_slot: dict[int, list[NodeTimes]] = {}
    for record in floor.times:
        by_slot.setdefault(record.slot, []).append(record)
    # slot freed -> its next node cordoned, exactly, for every slot
    handovers = [
        following.steps["cordon"] - previous.steps["uncordon"]
        for records in by_slot.values()
        for previous, following in itertools.pairwise(records)
    ]
    return {
        "wall_s": wall,
        "nodes": len(nodes),
        "control_planes": len(control_planes),
        "done": sum(1 for t in floor.times if "uncordon" in t.steps),
        "handovers_s": handovers,
        "phases": {t.name: {"started": t.started, **t.steps} for t in floor.times},
        "boot_polls": [t.boot_polls for t in floor.times],
        "cpu_s": time.process_time() - cpu_before,
    }


def main() -> int:
    """Runs the floor rollout and writes its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--talosconfig", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the figures, as JSON")
    parser.add_argument("--target", required=True, help="the OS version to install")
    parser.add_argument("--max-unavailable", type=int, default=1)
    parser.add_argument("--reboot-seconds", type=float, default=5.0)
    parser.add_argument("--selector", default="type=kwok", help="the nodes to upgrade")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(_main(args))
    args.out.write_text(json.dumps(figures))
    return 0 if figures["done"] == figures["nodes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
