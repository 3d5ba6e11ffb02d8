"""In-memory fakes of the engine's ports (KubeApi, OsApi) for component tests.

FakeKube keeps nodes and one plan object (with resourceVersion checks and a write counter);
FakeOsApi makes an install take effect at the next reboot, which happens at once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nodeos.core.nodes import CORDONED_BY_ANNOTATION
from nodeos.ports.kube import (
    ConflictError,
    Cordon,
    Eviction,
    EvictionOutcome,
    NodeHealth,
    NotFoundError,
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
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    unschedulable: bool = False
    annotations: dict[str, str] = field(default_factory=dict)


class FakeKube:
    def __init__(self, nodes: dict[str, FakeNode], plan: dict[str, Any]) -> None:
        self.nodes = nodes
        self.plan = plan
        self.version = 1
        self.events: list[str] = []
        self.fail_pods_on_once = False
        self.max_cordoned = 0

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

    async def cordon(self, node: str, owner: str) -> Cordon:
        n = self.nodes[node]
        if n.unschedulable and n.annotations.get(CORDONED_BY_ANNOTATION) != owner:
            return Cordon(ours=False, holder=n.annotations.get(CORDONED_BY_ANNOTATION))
        n.unschedulable = True
        n.annotations[CORDONED_BY_ANNOTATION] = owner
        self.max_cordoned = max(
            self.max_cordoned, sum(1 for x in self.nodes.values() if x.unschedulable)
        )
        return Cordon(ours=True)

    async def uncordon(self, node: str, owner: str) -> bool:
        n = self.nodes[node]
        if n.annotations.get(CORDONED_BY_ANNOTATION) != owner:
            return False
        n.unschedulable = False
        del n.annotations[CORDONED_BY_ANNOTATION]
        return True

    async def cordoned_nodes(self, owner: str) -> list[str]:
        return [
            n.name
            for n in self.nodes.values()
            if n.annotations.get(CORDONED_BY_ANNOTATION) == owner
        ]

    async def node_health(self, node: str) -> NodeHealth:
        return NodeHealth(ready=True, boot_id="")

    async def pods_on(self, node: str) -> list[PodView]:
        if self.fail_pods_on_once:
            self.fail_pods_on_once = False
            raise RuntimeError("API server hiccup (injected)")
        return []

    async def binds_pending(self) -> bool:
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

    async def read_secret_key(self, namespace: str, name: str, key: str) -> tuple[str, bytes]:
        raise NotFoundError(name)

    async def apply_plan(self, body: dict[str, Any]) -> None:
        return None

    async def delete_plan(self, name: str) -> None:
        return None

    async def patch_config_status(self, name: str, status: dict[str, Any]) -> None:
        return None


class FakeOsApi:
    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes = nodes
        self.installs: Counter[str] = Counter()

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
        n = self.nodes[node.name]
        n.version = n.pending or n.version
        n.boot_id = str(uuid.uuid4())

    async def rollback(self, node: NodeTarget) -> None:
        return None

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
