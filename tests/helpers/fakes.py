"""In-memory fakes of the engine's ports (KubeApi, OsApi) for component tests.

FakeKube keeps nodes and one plan object (with resourceVersion checks and a write counter);
FakeOsApi makes an install take effect at the next reboot, which happens at once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeos.core.nodes import CORDONED_BY_ANNOTATION
from nodeos.core.records import records_on
from nodeos.ports.kube import (
    ConflictError,
    Cordon,
    Eviction,
    EvictionOutcome,
    KubeApiError,
    NodeHealth,
    NotFoundError,
    PodListing,
    PodView,
)
from nodeos.ports.osapi import (
    ApplyOutcome,
    EtcdMember,
    EtcdMemberStatus,
    InstallOutcome,
    NodeTarget,
    OsVersion,
    ServiceStatus,
)

OLD, NEW = "v1.12.4", "v1.13.9"


@dataclass
class FakeNode:
    name: str
    version: str = OLD
    pending: str | None = None
    previous: str | None = None  # the version before the last upgrade (what Rollback boots)
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    unschedulable: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    ready: bool = True  # what its kubelet reports


class FakeKube:
    def __init__(self, nodes: dict[str, FakeNode], plan: dict[str, Any]) -> None:
        self.nodes = nodes
        self.plan = plan
        self.version = 1
        self.events: list[str] = []
        self.fail_pods_on_once = False
        self.max_cordoned = 0
        self.objects: dict[str, list[dict[str, Any]]] = {}  # by kind, for health checks
        self.unreadable: set[str] = set()  # kinds whose reads are forbidden

    async def get_plan(self, name: str) -> dict[str, Any]:
        if name != self.plan["metadata"]["name"]:
            raise NotFoundError(name)
        return {
            **self.plan,
            "metadata": {**self.plan["metadata"], "resourceVersion": str(self.version)},
        }

    async def patch_plan_status(self, name: str, status: dict[str, Any], rv: str) -> str:
        if rv != str(self.version):
            raise ConflictError(name)
        self.version += 1
        self.plan["status"] = {k: v for k, v in status.items() if v is not None}
        return str(self.version)

    async def remove_plan_annotation(self, name: str, key: str) -> None:
        return None

    async def cordon(
        self,
        node: str,
        owner: str,
        annotations: Mapping[str, str] | None = None,
        seen_version: str | None = None,
    ) -> Cordon:
        n = self.nodes[node]
        if n.unschedulable and n.annotations.get(CORDONED_BY_ANNOTATION) != owner:
            return Cordon(ours=False, holder=n.annotations.get(CORDONED_BY_ANNOTATION))
        n.unschedulable = True
        n.annotations[CORDONED_BY_ANNOTATION] = owner
        n.annotations.update(annotations or {})
        self.max_cordoned = max(
            self.max_cordoned, sum(1 for x in self.nodes.values() if x.unschedulable)
        )
        return Cordon(ours=True)

    async def uncordon(
        self, node: str, owner: str, annotations: Mapping[str, str] | None = None
    ) -> bool:
        n = self.nodes[node]
        if n.annotations.get(CORDONED_BY_ANNOTATION) != owner:
            return False
        n.unschedulable = False
        del n.annotations[CORDONED_BY_ANNOTATION]
        n.annotations.update(annotations or {})
        return True

    async def cordoned_nodes(self, owner: str) -> list[str]:
        return [
            n.name
            for n in self.nodes.values()
            if n.annotations.get(CORDONED_BY_ANNOTATION) == owner
        ]

    async def node_health(self, node: str) -> NodeHealth:
        return NodeHealth(ready=True, boot_id="")

    async def pods_on(self, node: str) -> PodListing:
        if self.fail_pods_on_once:
            self.fail_pods_on_once = False
            raise RuntimeError("API server hiccup (injected)")
        return PodListing([], "1")

    async def binds_pending(self, version: str) -> bool:
        return False

    async def evict(self, pod: PodView, grace_seconds: int | None) -> EvictionOutcome:
        return EvictionOutcome(Eviction.EVICTED)

    async def delete_pod(self, pod: PodView, grace_seconds: int | None) -> None:
        return None

    async def event(
        self,
        kind: str,
        name: str,
        uid: str,
        api_version: str,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        self.events.append(f"{kind}/{name}: {reason}")

    async def label_node(
        self,
        node: str,
        labels: dict[str, str | None],
        annotations: dict[str, str | None] | None = None,
    ) -> None:
        return None

    async def annotate_node(self, node: str, key: str, value: str | None) -> None:
        if node not in self.nodes:
            raise NotFoundError(node)
        annotations = self.nodes[node].annotations
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value

    async def nodes_annotated(self, key: str) -> dict[str, str]:
        return {n.name: n.annotations[key] for n in self.nodes.values() if key in n.annotations}

    def records(self) -> dict[str, dict[str, Any]]:
        """The plan's node records as the nodes carry them (camelCase, with the name)."""
        metadata = self.plan["metadata"]
        found = records_on(
            ((n.name, n.annotations) for n in self.nodes.values()),
            metadata["name"],
            metadata.get("uid", ""),
        )
        return {name: record.to_api() for name, record in found.items()}

    async def read_secret_key(self, namespace: str, name: str, key: str) -> tuple[str, bytes]:
        raise NotFoundError(name)

    async def apply_plan(self, body: dict[str, Any]) -> None:
        return None

    async def delete_plan(self, name: str) -> None:
        return None

    async def patch_config_status(self, name: str, status: dict[str, Any]) -> None:
        return None

    async def read_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str | None,
        label_selector: str | None,
    ) -> list[dict[str, Any]]:
        if kind in self.unreadable:
            raise KubeApiError(403, f"{kind} is forbidden")
        found = self.objects.get(kind, [])
        return [o for o in found if name is None or o["metadata"]["name"] == name]


class FakeOsApi:
    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes = nodes
        self.installs: Counter[str] = Counter()
        self.rollbacks: Counter[str] = Counter()

    async def version(self, node: NodeTarget) -> OsVersion:
        return OsVersion(tag=self.nodes[node.name].version)

    async def hostname(self, node: NodeTarget) -> str:
        return node.name

    async def boot_id(self, node: NodeTarget, *, rebooting: bool = False) -> str:
        return self.nodes[node.name].boot_id

    async def read_file(self, node: NodeTarget, path: str) -> bytes:
        return b"machine: {}\n"

    async def services(self, node: NodeTarget) -> list[ServiceStatus]:
        return []

    async def install(self, node: NodeTarget, image: str, api: str = "Auto") -> InstallOutcome:
        self.installs[node.name] += 1
        self.nodes[node.name].pending = image.rsplit(":", 1)[1]
        return InstallOutcome(api="Lifecycle", reboots_itself=False)

    async def reboot(self, node: NodeTarget, mode: str = "Default") -> None:
        self.boot(node.name)

    def boot(self, name: str) -> None:
        """The node boots again: on what was installed, with a new boot ID."""
        n = self.nodes[name]
        if n.pending and n.pending != n.version:
            n.previous, n.version, n.pending = n.version, n.pending, None
        n.boot_id = str(uuid.uuid4())

    async def rollback(self, node: NodeTarget) -> None:
        n = self.nodes[node.name]
        if n.previous:
            n.version, n.previous = n.previous, None
        n.boot_id = str(uuid.uuid4())
        self.rollbacks[node.name] += 1

    async def apply_configuration(
        self,
        node: NodeTarget,
        config: bytes,
        mode: str,
        *,
        dry_run: bool = False,
        try_timeout: Any = None,
    ) -> ApplyOutcome:
        return ApplyOutcome(mode="Auto", details="")

    async def etcd_members(self, node: NodeTarget) -> list[EtcdMember]:
        return []

    async def etcd_status(self, node: NodeTarget) -> EtcdMemberStatus:
        return EtcdMemberStatus(member_id=1, leader=1, is_learner=False)

    async def etcd_forfeit_leadership(self, node: NodeTarget) -> str:
        return ""

    async def close(self) -> None:
        return None
