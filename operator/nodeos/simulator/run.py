"""``nodeos simulate``: runs a simulated fleet until stopped, and says how to reach it.

Writes into ``--dir``: ``talosconfig`` (os:admin), ``talosconfig-spare`` (another os:admin
certificate with another common name, for rotation and a second replica),
``talosconfig-reader`` (os:reader),
``calls.jsonl`` (every call served) and ``simulator.json`` (endpoint, port, nodes and addresses),
so tests, the operator and the demo in other processes can find it. A test may write
``outages.json`` (``{"worker-2": <until, epoch seconds>}``) to make nodes' OS API unreachable
for a while.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, config

from nodeos.simulator.kube import NodeDriver
from nodeos.simulator.node import Faults
from nodeos.simulator.server import NodeSpec, Simulator, build_fleet

INFO_FILE = "simulator.json"


@dataclass
class Options:
    """What ``nodeos simulate`` was asked for."""

    workdir: Path
    control_planes: int = 3
    workers: int = 5
    version: str = "v1.12.4"
    reboot_seconds: float = 3.0
    per_node_addresses: bool = False
    port: int = 0
    kubeconfig: Path | None = None
    faults: dict[str, str] = field(default_factory=dict)
    client_cert_validity_s: float = 86400.0
    resync_s: float = 20.0


def node_specs(options: Options) -> list[NodeSpec]:
    """The nodes to simulate: cp-1..cp-N then worker-1..worker-M, with their faults."""
    names = [(f"cp-{i}", True) for i in range(1, options.control_planes + 1)]
    names += [(f"worker-{i}", False) for i in range(1, options.workers + 1)]
    unknown = set(options.faults) - {name for name, _ in names}
    if unknown:
        raise ValueError(f"faults name unknown nodes: {', '.join(sorted(unknown))}")
    return [
        NodeSpec(name, control_plane=cp, faults=Faults.parse(options.faults.get(name, "")))
        for name, cp in names
    ]


async def serve(options: Options, stop: asyncio.Event) -> None:
    """Runs the simulator (and the Node driver) until ``stop`` is set."""
    fleet = build_fleet(node_specs(options), options.version, options.reboot_seconds)
    options.workdir.mkdir(parents=True, exist_ok=True)
    fleet.journal = options.workdir / "calls.jsonl"
    fleet.journal.unlink(missing_ok=True)
    fleet.outages = options.workdir / "outages.json"
    fleet.outages.unlink(missing_ok=True)
    simulator = Simulator(fleet, per_node_addresses=options.per_node_addresses, port=options.port)
    await simulator.start()
    driver = None
    if options.kubeconfig is not None:
        settings = client.Configuration()
        config.load_kube_config(config_file=str(options.kubeconfig), client_configuration=settings)  # type: ignore[no-untyped-call]
        driver = NodeDriver(settings, fleet, resync_s=options.resync_s)
        await driver.start()
    admin = simulator.write_talosconfig(
        options.workdir / "talosconfig",
        validity=datetime.timedelta(seconds=options.client_cert_validity_s),
    )
    simulator.write_talosconfig(
        options.workdir / "talosconfig-spare", common_name="nodeos-client-spare"
    )
    simulator.write_talosconfig(options.workdir / "talosconfig-reader", roles=("os:reader",))
    info = {
        "endpoint": simulator.endpoint,
        "port": simulator.port,
        "talosconfig": str(admin),
        "journal": str(fleet.journal),
        "nodes": {
            node.name: {"address": node.address, "controlPlane": node.control_plane}
            for node in fleet.nodes.values()
        },
    }
    # written whole then renamed: whoever polls for the file never reads half of it
    staged = options.workdir / f".{INFO_FILE}.tmp"
    staged.write_text(json.dumps(info, indent=2))
    staged.replace(options.workdir / INFO_FILE)
    print(
        f"[simulator] {len(fleet.nodes)} nodes on {simulator.endpoint} running {options.version}; "
        f"talosconfig: {admin}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        if driver is not None:
            await driver.stop()
        await simulator.stop()


def run(options: Options) -> int:
    """Blocks until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop)

    asyncio.run(main())
    return 0
