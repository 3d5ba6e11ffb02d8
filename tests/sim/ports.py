"""The engine's ports (KubeApi, OsApi) over the simulated world, with faults from a seed.

Each engine incarnation gets its own pair of ports sharing one ``Life``. Killing the
incarnation marks the life dead: from then on every call it makes raises ``Killed`` (a
BaseException, so no ``except Exception`` in the engine can swallow it) before touching the
world, and a call already in flight that resumes after the kill changes nothing. So a killed
engine leaves exactly what it had written, as a SIGKILLed process does.

Faults, drawn per call from the seed's rates: the call fails before it takes effect
(transient), takes effect but its reply is lost (transient, the effect stays), is slow, or
fails permanently. Outages make every call of one kind fail for a while.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeos.core.nodes import CORDONED_BY_ANNOTATION
from nodeos.core.records import SUFFIX
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
    ErrorKind,
    EtcdMember,
    EtcdMemberStatus,
    InstallFailedError,
    InstallOutcome,
    NodeTarget,
    OsApiError,
    OsVersion,
    ServiceStatus,
)
from sim.world import World


class Killed(BaseException):
    """The calling engine incarnation is dead; nothing it does reaches the world."""


@dataclass
class Life:
    """One engine incarnation's liveness, shared by its ports."""

    number: int
    alive: bool = True

    def check(self) -> None:
        if not self.alive:
            raise Killed(f"incarnation {self.number}")


@dataclass
class FaultRates:
    """Per-call fault probabilities, and outage windows [(start, end)] in virtual seconds."""

    transient: float = 0.0
    lost_reply: float = 0.0
    slow: float = 0.0
    permanent: float = 0.0
    kube_outages: list[tuple[float, float]] = field(default_factory=list)
    osapi_outages: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # (method, node) -> fates for its next calls, in order: 'fail', 'lost' or 'permanent'
    script: dict[tuple[str, str], list[str]] = field(default_factory=dict)


class _Faults:
    def __init__(self, rates: FaultRates, rng: random.Random, world: World, life: Life) -> None:
        self.rates = rates
        self.rng = rng
        self.world = world
        self.life = life

    async def before(self, call: tuple[str, str], *, outage: bool, mutating: bool) -> str:
        """Decides this call's fate: 'ok', 'fail', 'lost' or 'permanent' (after any delay)."""
        self.life.check()
        scripted = self.rates.script.get(call)
        if scripted:
            await asyncio.sleep(0.01)
            self.life.check()
            return scripted.pop(0)
        if outage:
            await asyncio.sleep(self.rng.uniform(0.01, 0.5))
            self.life.check()
            return "fail"
        roll = self.rng.random()
        if roll < self.rates.slow:
            await asyncio.sleep(self.rng.uniform(0.5, 8.0))
        else:
            await asyncio.sleep(self.rng.uniform(0.001, 0.05))
        self.life.check()
        roll = self.rng.random()
        if roll < self.rates.transient:
            return "fail"
        roll -= self.rates.transient
        if mutating and roll < self.rates.lost_reply:
            return "lost"
        roll -= self.rates.lost_reply
        if roll < self.rates.permanent:
            return "permanent"
        return "ok"


def _in(windows: list[tuple[float, float]], now: float) -> bool:
    return any(start <= now < end for start, end in windows)


class SimKube:
    """KubeApi over the world."""

    def __init__(self, world: World, rates: FaultRates, rng: random.Random, life: Life) -> None:
        self.world = world
        self.life = life
        self.faults = _Faults(rates, rng, world, life)
        self.rates = rates
        self.requests = 0
        # listing version -> whether pods waited for binding then (the API server's history)
        self._pending_at: dict[str, bool] = {}

    async def _call(self, *, mutating: bool, method: str = "", node: str = "") -> str:
        self.requests += 1
        outage = _in(self.rates.kube_outages, self.world.now())
        fate = await self.faults.before((method, node), outage=outage, mutating=mutating)
        if fate == "fail":
            raise KubeApiError(self.world.rng.choice([0, 500, 503, 429]), "injected")
        if fate == "permanent":
            raise KubeApiError(403, "injected: forbidden")
        return fate

    @staticmethod
    def _reply(fate: str) -> None:
        if fate == "lost":
            raise KubeApiError(0, "injected: connection reset after the request was sent")

    async def get_plan(self, name: str) -> dict[str, Any]:
        self._reply(await self._call(mutating=False))
        if not self.world.body_of(name):
            raise NotFoundError(name)
        return self.world.plan_copy(name)

    async def patch_plan_status(
        self, name: str, status: dict[str, Any], resource_version: str
    ) -> str:
        fate = await self._call(mutating=True, method="patch_plan_status")
        body = self.world.body_of(name)
        if not body:
            raise NotFoundError(name)
        if resource_version != self.world.version_of(name):
            raise ConflictError(name)
        self.world.bump(name)
        body["status"] = {k: v for k, v in status.items() if v is not None}
        self.world.record("status", detail=_status_line(body["status"]), plan=name)
        self._reply(fate)
        return self.world.version_of(name)

    async def remove_plan_annotation(self, name: str, key: str) -> None:
        fate = await self._call(mutating=True)
        self.world.annotate(key, None, plan=name)
        self._reply(fate)

    async def cordon(
        self,
        node: str,
        owner: str,
        annotations: Mapping[str, str] | None = None,
        seen_version: str | None = None,
    ) -> Cordon:
        fate = await self._call(mutating=True, method="cordon", node=node)
        n = self.world.nodes[node]
        mark = n.annotations.get(CORDONED_BY_ANNOTATION)
        if n.unschedulable and mark != owner:
            self._reply(fate)
            return Cordon(ours=False, holder=mark)
        if not (n.unschedulable and mark == owner):
            self.world.cordon(node, owner)
        self._set(node, annotations)  # the same write, so the same instant
        self._reply(fate)
        return Cordon(ours=True)

    async def uncordon(
        self, node: str, owner: str, annotations: Mapping[str, str] | None = None
    ) -> bool:
        fate = await self._call(mutating=True, method="uncordon", node=node)
        n = self.world.nodes[node]
        if n.annotations.get(CORDONED_BY_ANNOTATION) != owner:
            self._reply(fate)
            return False
        self.world.uncordon(node, owner)
        self._set(node, annotations)
        self._reply(fate)
        return True

    def _set(self, node: str, annotations: Mapping[str, str | None] | None) -> None:
        """Sets (None: removes) annotations, journalling each record written."""
        for key, value in (annotations or {}).items():
            target = self.world.nodes[node].annotations
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
            phase = json.loads(value).get("phase") if value is not None else "removed"
            plan = key.removesuffix(SUFFIX)  # (a plan name short enough to be kept whole)
            self.world.record("record", node, detail=str(phase), plan=plan)

    async def cordoned_nodes(self, owner: str) -> list[str]:
        self._reply(await self._call(mutating=False, method="cordoned_nodes"))
        return [
            n.name
            for n in self.world.nodes.values()
            if n.annotations.get(CORDONED_BY_ANNOTATION) == owner
        ]

    async def node_health(self, node: str) -> NodeHealth:
        self._reply(await self._call(mutating=False, method="node_health", node=node))
        sim = self.world.nodes[node]
        return NodeHealth(ready=sim.ready, boot_id=sim.reported_boot_id)

    async def pods_on(self, node: str) -> PodListing:
        self._reply(await self._call(mutating=False, method="pods_on", node=node))
        version = str(len(self._pending_at) + 1)
        self._pending_at[version] = self.world.binds_pending()
        return PodListing(self._pod_views(node), version)

    def _pod_views(self, node: str) -> list[PodView]:
        return [
            PodView(
                namespace="default",
                name=pod.name,
                daemon_set=pod.daemon_set,
                mirror=False,
                terminating=pod.terminating,
                finished=False,
                labels={"app": pod.app},
                empty_dir=False,
            )
            for pod in self.world.pods_on(node)
        ]

    async def binds_pending(self, version: str) -> bool:
        self._reply(await self._call(mutating=False))
        return self._pending_at[version]

    async def evict(self, pod: PodView, grace_seconds: int | None) -> EvictionOutcome:
        fate = await self._call(mutating=True, method="evict")
        target = self.world.pods.get(pod.name)
        if target is None:
            self._reply(fate)
            return EvictionOutcome(Eviction.GONE)
        answer = self.world.evict(target)
        if answer == "multiple":
            raise KubeApiError(
                500,
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support.",
            )
        self._reply(fate)
        if answer == "blocked":
            return EvictionOutcome(
                Eviction.BLOCKED,
                "Cannot evict pod as it would violate the pod's disruption budget.",
            )
        return EvictionOutcome(Eviction.EVICTED)

    async def delete_pod(self, pod: PodView, grace_seconds: int | None) -> None:
        fate = await self._call(mutating=True)
        target = self.world.pods.get(pod.name)
        if target is not None and not target.terminating:
            self.world.record("pod-deleted", target.node or "", target.name)
            self.world.terminate(target, grace=0.1)
        self._reply(fate)

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
        fate = await self._call(mutating=True)
        self.world.events.append(f"{kind}/{name}: {reason}: {message}")
        self._reply(fate)

    async def label_node(
        self,
        node: str,
        labels: dict[str, str | None],
        annotations: dict[str, str | None] | None = None,
    ) -> None:
        self._reply(await self._call(mutating=True))

    async def annotate_node(self, node: str, key: str, value: str | None) -> None:
        fate = await self._call(mutating=True, method="annotate_node", node=node)
        self._set(node, {key: value})
        self._reply(fate)

    async def nodes_annotated(self, key: str) -> dict[str, str]:
        self._reply(await self._call(mutating=False, method="nodes_annotated"))
        return {
            n.name: n.annotations[key] for n in self.world.nodes.values() if key in n.annotations
        }

    async def read_secret_key(self, namespace: str, name: str, key: str) -> tuple[str, bytes]:
        self._reply(await self._call(mutating=False))
        raise NotFoundError(name)

    async def apply_plan(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def delete_plan(self, name: str) -> None:
        raise NotImplementedError

    async def patch_config_status(self, name: str, status: dict[str, Any]) -> None:
        raise NotImplementedError

    async def read_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str | None,
        label_selector: str | None,
    ) -> list[dict[str, Any]]:
        raise NotImplementedError  # the simulated plans have no health checks


class SimOsApi:
    """The Talos machine API of every simulated node; ``by`` names the plan whose engine calls."""

    def __init__(
        self, world: World, rates: FaultRates, rng: random.Random, life: Life, by: str = ""
    ) -> None:
        self.by = by
        self.world = world
        self.rates = rates
        self.life = life
        self.faults = _Faults(rates, rng, world, life)

    async def _call(self, node: str, *, mutating: bool, method: str = "") -> str:
        outage = _in(self.rates.osapi_outages.get(node, []), self.world.now())
        fate = await self.faults.before((method, node), outage=outage, mutating=mutating)
        if fate == "fail" or not self.world.nodes[node].up:
            raise OsApiError(node, ErrorKind.TRANSIENT, "UNAVAILABLE", "injected: unavailable")
        if fate == "permanent":
            raise OsApiError(node, ErrorKind.PERMANENT, "INTERNAL", "injected: internal error")
        return fate

    @staticmethod
    def _reply(node: str, fate: str) -> None:
        if fate == "lost":
            raise OsApiError(node, ErrorKind.TRANSIENT, "DEADLINE_EXCEEDED", "injected: reply lost")

    async def version(self, node: NodeTarget) -> OsVersion:
        self._reply(node.name, await self._call(node.name, mutating=False, method="version"))
        return OsVersion(tag=self.world.nodes[node.name].version)

    async def hostname(self, node: NodeTarget) -> str:
        self._reply(node.name, await self._call(node.name, mutating=False))
        return node.name

    async def boot_id(self, node: NodeTarget, *, rebooting: bool = False) -> str:
        self._reply(node.name, await self._call(node.name, mutating=False, method="boot_id"))
        return self.world.nodes[node.name].boot_id

    async def read_file(self, node: NodeTarget, path: str) -> bytes:
        self._reply(node.name, await self._call(node.name, mutating=False))
        version = self.world.nodes[node.name].version
        return f"machine:\n  install:\n    image: ghcr.io/siderolabs/installer:{version}\n".encode()

    async def services(self, node: NodeTarget) -> list[ServiceStatus]:
        self._reply(node.name, await self._call(node.name, mutating=False))
        return []

    def _sending(self, node: str) -> None:
        sim = self.world.nodes[node]
        sim.cordoned_when_sent = sim.unschedulable

    async def install(self, node: NodeTarget, image: str, api: str = "Auto") -> InstallOutcome:
        self._sending(node.name)
        fate = await self._call(node.name, mutating=True, method="install")
        sim = self.world.nodes[node.name]
        if sim.install_fails:
            self.world.record("install-failed", node.name)
            raise InstallFailedError(node.name, 1, ("injected: installer failed",))
        self.world.install(node.name, image.rsplit(":", 1)[1], by=self.by)
        self._reply(node.name, fate)
        return InstallOutcome(api="Lifecycle", reboots_itself=False)

    async def reboot(self, node: NodeTarget, mode: str = "Default") -> None:
        self._sending(node.name)
        fate = await self._call(node.name, mutating=True, method="reboot")
        self.world.reboot(node.name, by=self.by)
        self._reply(node.name, fate)

    async def rollback(self, node: NodeTarget) -> None:
        fate = await self._call(node.name, mutating=True, method="rollback")
        sim = self.world.nodes[node.name]
        self.world.record("rollback", node.name, plan=self.by)
        sim.installed = sim.previous or sim.version
        self.world.reboot(node.name, why="rollback-reboot", by=self.by)
        self._reply(node.name, fate)

    async def apply_configuration(
        self,
        node: NodeTarget,
        config: bytes,
        mode: str,
        *,
        dry_run: bool = False,
        try_timeout: Any = None,
    ) -> ApplyOutcome:
        fate = await self._call(node.name, mutating=True)
        self._reply(node.name, fate)
        return ApplyOutcome(mode="Staged", details="")  # type: ignore[arg-type]

    async def etcd_members(self, node: NodeTarget) -> list[EtcdMember]:
        self._reply(node.name, await self._call(node.name, mutating=False))
        cps = [n for n in self.world.nodes.values() if n.control_plane]
        return [EtcdMember(id=i + 1, hostname=n.name, is_learner=False) for i, n in enumerate(cps)]

    async def etcd_status(self, node: NodeTarget) -> EtcdMemberStatus:
        self._reply(node.name, await self._call(node.name, mutating=False))
        cps = [n.name for n in self.world.nodes.values() if n.control_plane]
        me = cps.index(node.name) + 1
        leader = self.world.etcd_leader()
        errors = ("injected: etcd unhealthy",) if self.world.etcd_unhealthy else ()
        return EtcdMemberStatus(
            member_id=me,
            leader=cps.index(leader) + 1 if leader else 0,
            is_learner=False,
            errors=errors,
        )

    async def etcd_forfeit_leadership(self, node: NodeTarget) -> str:
        self._reply(node.name, await self._call(node.name, mutating=True))
        return ""

    async def close(self) -> None:
        return None


def _status_line(status: dict[str, Any]) -> str:
    flying = ",".join(status.get("inFlight") or [])
    return f"{status.get('phase')} inFlight=[{flying}]"
