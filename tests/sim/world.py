"""The simulated world the engine acts on: Nodes, pods, PDBs, a scheduler, OS API nodes, a plan.

It behaves as the real parts do where the engine's safety depends on it:

- Evictions follow the Eviction API: 429 when a PodDisruptionBudget would be broken, 500 when
  two budgets cover the pod, and the pod terminates after its grace period.
- The ReplicaSet replaces a pod as soon as it is terminating; the scheduler picks a node when
  the replacement is created and binds it a moment later, so a pod can land on a node that was
  cordoned in between (a late bind), as with the real scheduler. Its view of cordons lags
  (``SCHEDULER_LAG_S``), as its Node informer does: a pod created just after a cordon may
  still be placed on that node.
- A reboot takes the node down (NotReady, its pods not Ready), and brings it back after a while
  with a new boot ID, on the installed version (or the old one, for a boot fallback).
- etcd members are the control-plane nodes; a member that is down does not answer.
- The plan object has a resourceVersion and a generation; guarded status writes conflict.

Every change goes through ``record``, which appends to the journal and lets the invariant
checker look at the world as it is at that moment.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodeos.core.nodes import CONTROL_PLANE_LABEL, CORDONED_BY_ANNOTATION, NodeView
from nodeos.core.records import records_on

OLD, NEW, NEWER = "v1.12.4", "v1.13.9", "v1.14.1"
SCHEDULER_LAG_S = 0.3  # how far behind the scheduler's view of cordons may be


@dataclass
class Node:
    name: str
    control_plane: bool
    version: str = OLD
    installed: str | None = None  # written to the other partition, active after a reboot
    previous: str | None = None  # what the other partition holds after an upgrade (rollback)
    boot_id: str = ""
    reported_boot_id: str = ""  # what the kubelet last posted in nodeInfo.bootID
    ready: bool = True
    up: bool = True
    unschedulable: bool = False
    cordoned_at: float | None = None  # loop time of the last cordon, for the scheduler's lag
    # whether it was cordoned when the OS API call being served (install, reboot) was sent:
    # a cordon lifted by someone else while the call travels is not the engine's doing
    cordoned_when_sent: bool = False
    uncordoned_by: str = ""  # who lifted the last cordon (a plan's name, or someone else)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    # faults
    install_fails: bool = False
    never_returns: bool = False
    boots_old: bool = False
    sick_on_new: bool = False  # Ready never comes back once it boots a new version
    reboot_s: float = 20.0
    reported_version: str = OLD  # the kubelet's osImage, posted with its status

    def view(self) -> NodeView:
        labels = {"pool": "sim", "kubernetes.io/hostname": self.name}
        if self.control_plane:
            labels[CONTROL_PLANE_LABEL] = ""
        return NodeView(
            name=self.name,
            labels=labels,
            ready=self.ready,
            unschedulable=self.unschedulable,
            cordoned_by=self.annotations.get(CORDONED_BY_ANNOTATION),
            os_image=f"Talos ({self.reported_version})",
            boot_id=self.reported_boot_id,
            uid=self.uid,
        )


@dataclass
class Pod:
    name: str
    app: str
    node: str | None  # None: not bound yet
    ready: bool = False
    terminating: bool = False
    daemon_set: bool = False


@dataclass
class Budget:
    """A PodDisruptionBudget over the pods of some apps."""

    name: str
    apps: tuple[str, ...]
    min_available: int


@dataclass
class Entry:
    """One line of the journal."""

    at: float
    kind: str
    node: str = ""
    detail: str = ""
    plan: str = ""  # the plan whose engine made the call (OS API effects and status writes)

    def __str__(self) -> str:
        by = f" [{self.plan}]" if self.plan else ""
        return f"{self.at:9.2f} {self.kind:<14} {self.node:<8} {self.detail}{by}"


Check = Callable[["World", Entry], None]


class World:
    """Everything outside the engine, on the simulation's virtual clock."""

    def __init__(self, rng: random.Random, loop: asyncio.AbstractEventLoop) -> None:
        self.rng = rng
        self.loop = loop
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.budgets: list[Budget] = []
        self.plan: dict[str, Any] = {}  # the scenario's plan (resourceVersion: below)
        self.others: dict[str, dict[str, Any]] = {}  # more plans, each with its own version
        self.resource_version = 1
        self.journal: list[Entry] = []
        self.checks: list[Check] = []
        self.etcd_unhealthy = False
        self.deleted = False  # the plan's finalizer ran: the object is gone
        self.events: list[str] = []
        self._pod_serial = 0
        self._ids = 0

    # -- the journal -----------------------------------------------------------------------

    def now(self) -> float:
        return self.loop.time()

    def record(self, kind: str, node: str = "", detail: str = "", plan: str = "") -> None:
        entry = Entry(self.now(), kind, node, detail, plan)
        self.journal.append(entry)
        for check in self.checks:
            check(self, entry)

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:05d}"

    # -- building ---------------------------------------------------------------------------

    def add_node(self, name: str, control_plane: bool) -> Node:
        boot = self.new_id("boot")
        node = Node(
            name, control_plane, boot_id=boot, reported_boot_id=boot, uid=self.new_id("uid")
        )
        self.nodes[name] = node
        return node

    def add_app(self, app: str, replicas: int, min_available: int) -> None:
        workers = [n.name for n in self.nodes.values() if not n.control_plane]
        for i in range(replicas):
            self._new_pod(app, workers[i % len(workers)], ready=True)
        self.budgets.append(Budget(f"pdb-{app}", (app,), min_available))

    def _new_pod(self, app: str, node: str | None, *, ready: bool = False) -> Pod:
        self._pod_serial += 1
        pod = Pod(f"{app}-{self._pod_serial}", app, node, ready=ready)
        self.pods[pod.name] = pod
        return pod

    # -- the plan object ----------------------------------------------------------------------

    def plan_body(self) -> dict[str, Any]:
        """What kopf hands the daemon: the live object, changed in place by later events."""
        return self.plan

    def body_of(self, name: str) -> dict[str, Any]:
        """Any plan's live object by name ({} when there is none)."""
        if self.plan and self.plan["metadata"]["name"] == name:
            return self.plan
        return self.others.get(name, {})

    def add_plan(self, name: str, spec: dict[str, Any], created: str) -> None:
        """Another plan, created (e.g. by another team) while the scenario runs."""
        self.others[name] = {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "UpgradePlan",
            "metadata": {
                "name": name,
                "uid": f"{name}-uid",
                "generation": 1,
                "creationTimestamp": created,
                "annotations": {},
                "resourceVersion": "1",
            },
            "spec": spec,
        }
        self.record("plan-created", detail=name)

    def plan_copy(self, name: str | None = None) -> dict[str, Any]:
        body = copy.deepcopy(self.body_of(name) if name else self.plan)
        if name is None or name not in self.others:
            body["metadata"]["resourceVersion"] = str(self.resource_version)
        return body

    def version_of(self, name: str) -> str:
        """The plan's resourceVersion (the scenario's plan keeps its own counter)."""
        if name in self.others:
            return str(self.others[name]["metadata"]["resourceVersion"])
        return str(self.resource_version)

    def bump(self, name: str | None = None) -> None:
        """A write to the plan: a new resourceVersion."""
        if name in self.others:
            metadata = self.others[name]["metadata"]
            metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        else:
            self.resource_version += 1

    def edit_spec(
        self, change: Callable[[dict[str, Any]], None], what: str, plan: str | None = None
    ) -> None:
        """A user's `kubectl edit`: new generation and resourceVersion."""
        body = self.body_of(plan) if plan else self.plan
        change(body["spec"])
        body["metadata"]["generation"] += 1
        self.bump(plan)
        self.record("spec-edit", detail=what, plan=plan or "")

    def annotate(self, key: str, value: str | None, plan: str | None = None) -> None:
        body = self.body_of(plan) if plan else self.plan
        annotations = body["metadata"].setdefault("annotations", {})
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
        self.bump(plan)
        self.record("annotate", detail=f"{key}={value}", plan=plan or "")

    def status(self, name: str | None = None) -> dict[str, Any]:
        body = self.body_of(name) if name else self.plan
        return dict(body.get("status") or {})

    def records(self, name: str | None = None) -> dict[str, dict[str, Any]]:
        """The plan's node records, as its Nodes carry them (camelCase, with the name)."""
        body = self.body_of(name) if name else self.plan
        if not body:
            return {}
        metadata = body["metadata"]
        found = records_on(
            ((n.name, n.annotations) for n in self.nodes.values()),
            metadata["name"],
            metadata["uid"],
        )
        return {name: record.to_api() for name, record in found.items()}

    # -- pods, budgets, scheduler --------------------------------------------------------------

    def pods_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.node == node]

    def healthy(self, app: str) -> int:
        return sum(1 for p in self.pods.values() if p.app == app and p.ready and not p.terminating)

    def budgets_for(self, pod: Pod) -> list[Budget]:
        return [b for b in self.budgets if pod.app in b.apps]

    def evict(self, pod: Pod) -> str:
        """The Eviction API: 'evicted', 'blocked' (429) or 'multiple' (500)."""
        budgets = self.budgets_for(pod)
        if len(budgets) > 1:
            return "multiple"
        if pod.terminating:
            return "evicted"
        for budget in budgets:
            healthy = sum(self.healthy(app) for app in budget.apps)
            if healthy - (1 if pod.ready else 0) < budget.min_available:
                return "blocked"
        self.terminate(pod, grace=self.rng.uniform(0.2, 3.0))
        return "evicted"

    def terminate(self, pod: Pod, grace: float) -> None:
        pod.terminating = True
        self.record("pod-terminating", pod.node or "", pod.name)
        self.loop.call_later(grace, self._remove_pod, pod.name)
        if not pod.daemon_set:
            self._replace(pod.app)

    def _remove_pod(self, name: str) -> None:
        pod = self.pods.pop(name, None)
        if pod is not None:
            self.record("pod-gone", pod.node or "", name)

    def _replace(self, app: str) -> None:
        """The ReplicaSet's new pod; the scheduler picks its node now and binds it a bit later."""
        pod = self._new_pod(app, None)
        candidates = [
            n.name
            for n in self.nodes.values()
            if not n.control_plane and n.ready and not self._seen_cordoned(n)
        ]
        if not candidates:
            self.loop.call_later(5.0, self._retry_bind, pod.name)
            return
        chosen = self.rng.choice(sorted(candidates))
        self.loop.call_later(self.rng.uniform(0.05, 1.5), self._bind, pod.name, chosen)

    def _seen_cordoned(self, node: Node) -> bool:
        """The cordon as the scheduler sees it: its Node informer is up to a moment behind."""
        if not node.unschedulable:
            return False
        return node.cordoned_at is None or self.loop.time() - node.cordoned_at >= SCHEDULER_LAG_S

    def _retry_bind(self, name: str) -> None:
        pod = self.pods.get(name)
        if pod is None or pod.node is not None:
            return
        del self.pods[name]
        self._replace(pod.app)

    def _bind(self, name: str, node: str) -> None:
        pod = self.pods.get(name)
        if pod is None:
            return
        pod.node = node
        self.record("pod-bound", node, name)
        self.loop.call_later(self.rng.uniform(0.5, 2.0), self._pod_started, name)

    def _pod_started(self, name: str) -> None:
        pod = self.pods.get(name)
        if pod is not None and pod.node is not None and self.nodes[pod.node].up:
            pod.ready = True

    def binds_pending(self) -> bool:
        return any(p.node is None for p in self.pods.values())

    # -- nodes ----------------------------------------------------------------------------------

    def cordon(self, name: str, owner: str | None) -> None:
        node = self.nodes[name]
        node.unschedulable = True
        node.cordoned_at = self.loop.time()
        if owner is not None:
            node.annotations[CORDONED_BY_ANNOTATION] = owner
        self.record("cordon", name, owner or "someone else")

    def uncordon(self, name: str, who: str) -> None:
        node = self.nodes[name]
        node.unschedulable = False
        node.uncordoned_by = who
        node.annotations.pop(CORDONED_BY_ANNOTATION, None)
        self.record("uncordon", name, who)

    def install(self, name: str, version: str, by: str = "") -> None:
        self.nodes[name].installed = version
        self.record("install", name, version, plan=by)

    def reboot(self, name: str, why: str = "reboot", by: str = "") -> None:
        node = self.nodes[name]
        self.record(why, name, plan=by)
        node.up = False
        self.loop.call_later(0.5, self._not_ready, name)
        if not node.never_returns:
            self.loop.call_later(node.reboot_s, self._boot, name)

    def _not_ready(self, name: str) -> None:
        node = self.nodes[name]
        if node.up:
            return
        node.ready = False
        for pod in self.pods_on(name):
            pod.ready = False
        self.record("node-notready", name)

    def _boot(self, name: str) -> None:
        node = self.nodes[name]
        if node.installed is not None and not node.boots_old and node.installed != node.version:
            node.previous, node.version = node.version, node.installed
        node.installed = None
        node.boot_id = self.new_id("boot")
        node.up = True
        self.record("boot", name, node.version)
        # The kubelet starts and posts its status (Ready, bootID, osImage) a moment later.
        self.loop.call_later(self.rng.uniform(0.5, 3.0), self._kubelet_posted, name, node.boot_id)

    def _kubelet_posted(self, name: str, boot_id: str) -> None:
        node = self.nodes[name]
        if not node.up or node.boot_id != boot_id:
            return
        node.reported_boot_id = node.boot_id
        node.reported_version = node.version
        node.ready = not (node.sick_on_new and node.previous is not None and node.version != OLD)
        self.record("kubelet-ready" if node.ready else "kubelet-notready", name)
        for pod in self.pods_on(name):
            if not pod.terminating:
                self.loop.call_later(1.0, self._pod_started, pod.name)

    def reregister(self, name: str, replaced: bool) -> None:
        """The Node object is deleted and created again (same name, new UID, no marks).

        ``replaced``: a new machine behind the name, installed from the old image.
        """
        node = self.nodes[name]
        node.uid = self.new_id("uid")
        node.unschedulable = False
        node.annotations.clear()
        if replaced and node.up:
            node.version = node.reported_version = OLD
            node.installed = node.previous = None
            node.boot_id = node.reported_boot_id = self.new_id("boot")
        self.record("reregister", name, "replaced machine" if replaced else "same machine")

    # -- etcd -------------------------------------------------------------------------------

    def etcd_leader(self) -> str | None:
        members = [n for n in self.nodes.values() if n.control_plane and n.up]
        return members[0].name if members else None
