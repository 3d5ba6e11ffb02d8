"""The operator's settings: command-line flags, each with an environment variable default."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class OperatorConfig:
    """Everything ``nodeos run`` needs to know."""

    kubeconfig: Path | None
    talosconfig: Path
    os_api_endpoints: Literal["ControlPlane", "Node"]
    os_api_port: int
    os_api_timeout_s: float
    metrics_port: int
    health_port: int
    namespace: str
    lease_name: str
    identity: str
    leader_election: bool
    node_name: str | None
    pod_name: str | None
    poll_s: float
    log_level: str = "INFO"

    @property
    def own_pod(self) -> tuple[str, str] | None:
        """(namespace, name) of the operator's own pod, never evicted."""
        return (self.namespace, self.pod_name) if self.pod_name else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the flags of ``nodeos run``."""
    env = os.environ.get
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=env("KUBECONFIG"),
        help="kubeconfig file (default: in-cluster service account)",
    )
    parser.add_argument(
        "--talosconfig",
        type=Path,
        default=Path(env("NODEOS_TALOSCONFIG", "/var/run/secrets/talos.dev/config")),
        help="talosconfig with an os:admin certificate (re-read when it changes)",
    )
    parser.add_argument(
        "--os-api-endpoints",
        choices=("ControlPlane", "Node"),
        default=env("NODEOS_OS_API_ENDPOINTS", "ControlPlane"),
        help="dial the talosconfig endpoints and route by node (ControlPlane), "
        "or dial each node's address (Node)",
    )
    parser.add_argument("--os-api-port", type=int, default=int(env("NODEOS_OS_API_PORT", "50000")))
    parser.add_argument(
        "--os-api-timeout", type=float, default=float(env("NODEOS_OS_API_TIMEOUT", "10"))
    )
    parser.add_argument("--metrics-port", type=int, default=int(env("NODEOS_METRICS_PORT", "8080")))
    parser.add_argument("--health-port", type=int, default=int(env("NODEOS_HEALTH_PORT", "8081")))
    parser.add_argument(
        "--namespace",
        default=env("POD_NAMESPACE", "nodeos-system"),
        help="namespace of the leader-election Lease",
    )
    parser.add_argument("--lease-name", default=env("NODEOS_LEASE_NAME", "nodeos-operator"))
    parser.add_argument(
        "--identity", default=env("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    )
    parser.add_argument(
        "--no-leader-election",
        action="store_true",
        help="run without the Lease (only when exactly one replica runs)",
    )
    parser.add_argument(
        "--node-name",
        default=env("NODE_NAME"),
        help="the node the operator runs on (upgraded last)",
    )
    parser.add_argument("--pod-name", default=env("POD_NAME"))
    parser.add_argument(
        "--log-level",
        default=env("NODEOS_LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=float(env("NODEOS_POLL", "0.5")),
        help="seconds between OS API polls while a node reboots",
    )


def from_arguments(args: argparse.Namespace) -> OperatorConfig:
    """The settings parsed by ``add_arguments``."""
    return OperatorConfig(
        kubeconfig=args.kubeconfig,
        talosconfig=args.talosconfig,
        os_api_endpoints=args.os_api_endpoints,
        os_api_port=args.os_api_port,
        os_api_timeout_s=args.os_api_timeout,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        namespace=args.namespace,
        lease_name=args.lease_name,
        identity=args.identity,
        leader_election=not args.no_leader_election,
        node_name=args.node_name,
        pod_name=args.pod_name,
        poll_s=args.poll_interval,
        log_level=args.log_level,
    )
