"""The Node watch's CPU per event: ``NodeWatch`` reading a stream of realistic Node updates.

    .venv/bin/python benchmarks/node_watch.py [--nodes 1000] [--events 20000]

A child process serves a Nodes API over plain HTTP (a paged LIST, then one WATCH streaming
``--events`` MODIFIED events of Nodes about 3 KB long, as kwok's are); this process runs the
watch and prints the CPU it used per event, from the end of the list to the last event
applied. TLS is left out: it costs the same per byte however the stream is read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time
from typing import Any

from aiohttp import web
from kubernetes import client

from nodeos.adapters.nodewatch import NodeWatch


def _node(name: str, version: int) -> dict[str, Any]:
    conditions = [
        {
            "type": kind,
            "status": "True" if kind == "Ready" else "False",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "reason": f"Kubelet{kind}",
            "message": f"kubelet reports {kind} as it should be",
        }
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
    ]
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "labels": {f"example.com/label-{i}": f"value-{i}" for i in range(12)},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "example.com/note": "x" * 200},
        },
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "nodeInfo": {
                "osImage": "Talos (v1.12.4)",
                "bootID": "0" * 36,
                "machineID": "1" * 32,
                "kubeletVersion": "v1.33.0",
            },
            "images": [
                {"names": [f"registry.example/image-{i}:v1"], "sizeBytes": 1} for i in range(10)
            ],
        },
    }


def _serve(port: int, nodes: int, events: int) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            items = [_node(f"node-{i}", 1) for i in range(nodes)]
            return web.json_response({"items": items, "metadata": {"resourceVersion": "1"}})
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(events):
            event = {"type": "MODIFIED", "object": _node(f"node-{i % nodes}", i + 2)}
            await response.write(json.dumps(event).encode() + b"\n")
            if i % 50 == 0:
                await asyncio.sleep(0.001)  # in bursts, as a busy API server sends them
        await asyncio.sleep(3600)
        return response

    app = web.Application()
    app.router.add_get("/api/v1/nodes", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def _measure(port: int, nodes: int, events: int) -> tuple[float, float]:
    applied = 0
    all_in = asyncio.Event()

    def count(name: str, before: object, after: object) -> None:
        nonlocal applied
        applied += 1
        if applied == nodes + events:
            all_in.set()

    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    watch = NodeWatch(api, count)
    task = asyncio.create_task(watch.run())
    await watch.ready.wait()
    cpu, wall = time.process_time(), time.monotonic()
    await all_in.wait()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return cpu, wall


def main() -> int:
    """Prints the watch's CPU per event."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.Process(target=_serve, args=(port, args.nodes, args.events))
    server.start()
    try:
        for _ in range(100):
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        cpu, wall = asyncio.run(_measure(port, args.nodes, args.events))
    finally:
        server.terminate()
        server.join()
    print(
        json.dumps(
            {
                "events": args.events,
                "watch_cpu_ms_per_event": round(cpu * 1000 / args.events, 3),
                "wall_s": round(wall, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
