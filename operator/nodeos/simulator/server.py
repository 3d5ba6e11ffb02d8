"""Runs the simulated fleet as gRPC servers with mTLS, and writes talosconfigs to reach it.

One shared endpoint on 127.0.0.1 routes calls by the ``node`` metadata key; optionally each node
also listens on its own loopback address (127.0.0.10, .11, ...). The simulator creates its own CA
and server certificate; ``talosconfig()`` issues client certificates with any roles and lifetime,
which is how tests rotate or expire credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from nodeos import pki
from nodeos.osapi.v1 import image_pb2_grpc, lifecycle_pb2_grpc, machine_pb2_grpc
from nodeos.simulator import services
from nodeos.simulator.fleet import Fleet
from nodeos.simulator.node import Faults, SimulatedNode

_TICK_S = 0.05


@dataclass(frozen=True)
class NodeSpec:
    """One node to simulate."""

    name: str
    control_plane: bool = False
    faults: Faults | None = None


def build_fleet(
    specs: Sequence[NodeSpec], version: str, reboot_seconds: float, first_address: int = 10
) -> Fleet:
    """A fleet of nodes on consecutive loopback addresses, all running ``version``."""
    nodes = []
    for index, spec in enumerate(specs):
        role = "controlplane" if spec.control_plane else "worker"
        nodes.append(
            SimulatedNode(
                name=spec.name,
                address=str(ipaddress.IPv4Address("127.0.0.0") + first_address + index),
                version=version,
                control_plane=spec.control_plane,
                reboot_seconds=reboot_seconds,
                faults=spec.faults or Faults(),
                config=f"machine:\n  type: {role}\n".encode(),
            )
        )
    return Fleet(nodes)


class Simulator:
    """Serves a fleet over mTLS until stopped."""

    def __init__(self, fleet: Fleet, *, per_node_addresses: bool = False, port: int = 0) -> None:
        self.fleet = fleet
        self.per_node_addresses = per_node_addresses
        self.ca = pki.CertificateAuthority.create("nodeos-simulator-ca")
        self.port = port  # 0: any free port
        self.endpoint = ""
        self._servers: list[grpc.aio.Server] = []
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Generates the server certificates and starts listening.

        Each listener presents a certificate for its own names only, as each Talos node's apid
        does: the shared endpoint for ``localhost``, ``talos`` and 127.0.0.1, a node's own
        address for that node's name and address. (One certificate naming the whole fleet made
        every client call cost time in proportion to the fleet: gRPC walks the peer's names on
        each call to check the host.)
        """
        default = (
            self.fleet.control_planes()[0].name
            if self.fleet.control_planes()
            else next(iter(self.fleet.nodes))
        )
        shared = self._credentials(("localhost", "talos", "talos.default"), ("127.0.0.1",))
        await self._serve("127.0.0.1", services.Gate(self.fleet, default), shared)
        if self.per_node_addresses:
            for node in self.fleet.nodes.values():
                own = self._credentials((node.name,), (node.address,))
                await self._serve(
                    node.address, services.Gate(self.fleet, node.name, own=node.name), own
                )
        self.endpoint = f"127.0.0.1:{self.port}"
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        """Stops listening and ticking."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for server in self._servers:
            await server.stop(grace=0.5)
        self._servers.clear()

    def talosconfig(
        self,
        roles: Sequence[str] = ("os:admin",),
        *,
        validity: datetime.timedelta = datetime.timedelta(days=1),
        context: str = "simulator",
        common_name: str = "nodeos-client",
        endpoints: Sequence[str] = (),
    ) -> str:
        """A talosconfig whose client certificate carries ``roles`` and ``common_name``.

        The journal records the common name as the caller. ``endpoints``: default the shared
        address; with per-node addresses, e.g. the control planes' (as a real cluster's).
        """
        client = self.ca.issue(
            common_name, organizations=tuple(roles), client=True, validity=validity
        )
        endpoints = list(endpoints) or [self.endpoint]
        return yaml.safe_dump(
            {
                "context": context,
                "contexts": {
                    context: {
                        "endpoints": endpoints,
                        "nodes": list(self.fleet.nodes),
                        "ca": _b64(self.ca.cert_pem),
                        "crt": _b64(client.cert_pem),
                        "key": _b64(client.key_pem),
                    }
                },
            },
            sort_keys=False,
        )

    def write_talosconfig(
        self,
        path: Path,
        roles: Sequence[str] = ("os:admin",),
        *,
        validity: datetime.timedelta = datetime.timedelta(days=1),
        common_name: str = "nodeos-client",
        endpoints: Sequence[str] = (),
    ) -> Path:
        """Writes a talosconfig with mode 0600 (atomically, so readers never see half a file)."""
        text = self.talosconfig(
            roles, validity=validity, common_name=common_name, endpoints=endpoints
        )
        temporary = path.with_name(f".{path.name}.tmp")
        pki.write_pem(temporary, text.encode(), secret=True)
        temporary.replace(path)
        return path

    def _credentials(
        self, dns_names: Sequence[str], ip_addresses: Sequence[str]
    ) -> grpc.ServerCredentials:
        """Server credentials for these names, requiring a client certificate of our CA."""
        serving = self.ca.issue(
            "nodeos-simulator",
            dns_names=tuple(dns_names),
            ip_addresses=tuple(ip_addresses),
            server=True,
        )
        return grpc.ssl_server_credentials(
            [(serving.key_pem, serving.cert_pem)],
            root_certificates=self.ca.cert_pem,
            require_client_auth=True,
        )

    async def _serve(
        self, host: str, gate: services.Gate, credentials: grpc.ServerCredentials
    ) -> None:
        server = grpc.aio.server()
        machine_pb2_grpc.add_MachineServiceServicer_to_server(services.MachineService(gate), server)
        lifecycle_pb2_grpc.add_LifecycleServiceServicer_to_server(
            services.LifecycleService(gate), server
        )
        image_pb2_grpc.add_ImageServiceServicer_to_server(services.ImageService(gate), server)
        bound = server.add_secure_port(f"{host}:{self.port}", credentials)
        if bound == 0:
            raise OSError(f"the simulator cannot listen on {host}:{self.port}")
        self.port = bound
        await server.start()
        self._servers.append(server)

    async def _tick(self) -> None:
        while True:
            self.fleet.advance()
            await asyncio.sleep(_TICK_S)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
