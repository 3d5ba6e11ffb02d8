"""Checks design.md's invariants at every journal entry, and the end state once a run is over.

Safety (at the moment of each effect):
- budget: a node we cordon while it is in service fits maxUnavailable counting every selected
  node already out (NotReady or cordoned by anyone); our marks never exceed the budget;
- control planes one at a time, never one while another is down, and every control plane
  finished (or failed) before a worker is cordoned;
- the node's slot is in the persisted in-flight ledger before we cordon it;
- no install or reboot of a node that is not cordoned, or that still has pods to move;
- at most one install per node per attempt, and none on a node already on the target;
- the operator never writes the plan's spec;
- a node has one plan at a time: no plan installs on or reboots a node that another plan holds
  (in its in-flight ledger, or carrying its cordon mark).

Liveness (on a timer): no in-flight node stays past its deadline plus slack.

End state: none of our cordons left except on nodes reported Failed and kept cordoned by
policy; a Completed plan has every selected node on the target or reported failed; the counts
agree with the world; a plan that spent its failure budget says Failed.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nodeos.core.nodes import CORDONED_BY_ANNOTATION, matches
from nodeos.core.planner import max_unavailable
from nodeos.models.upgradeplan import UpgradePlanSpec
from sim.world import Entry, Node, World

EPOCH = datetime.datetime(2026, 1, 5, tzinfo=datetime.UTC)
EXTERNAL = frozenset(
    {
        "human-cordon",
        "human-uncordon",
        "spec-edit",
        "node-crash",
        "reregister",
        "clock-jump",
        "kubelet-notready",  # a node's own health races any check made before a cordon
    }
)
GRACE_S = 5.0  # an external change this recent may not have reached the engine yet
LIVENESS_SLACK_S = 120.0


def at(seconds: float) -> datetime.datetime:
    """The wall-clock time of a virtual instant."""
    return EPOCH + datetime.timedelta(seconds=seconds)


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return (datetime.datetime.fromisoformat(text) - EPOCH).total_seconds()


@dataclass
class Checker:
    """Collects violations; ``plan`` is the plan's name (our cordon mark)."""

    plan: str
    violations: list[str] = field(default_factory=list)
    installs: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_external: float = -1e9
    checked: int = 0
    reported: set[str] = field(default_factory=set)
    progressed: bool = False
    unrecorded: dict[str, float] = field(default_factory=dict)  # in flight, no record, since

    def fail(self, world: World, text: str, *, once: str | None = None) -> None:
        """Records a violation; with ``once``, only the first time for that key."""
        if once is not None:
            if once in self.reported:
                return
            self.reported.add(once)
        self.violations.append(f"t={world.now():.2f}s [{self.plan}] {text}")

    # -- helpers -------------------------------------------------------------------------------

    def _spec(self, world: World) -> dict[str, Any]:
        spec: dict[str, Any] = world.body_of(self.plan)["spec"]
        return spec

    def _status(self, world: World) -> dict[str, Any]:
        return world.status(self.plan)

    def _deleted(self, world: World) -> bool:
        return world.deleted and bool(world.plan) and world.plan["metadata"]["name"] == self.plan

    def _others(self, world: World) -> dict[str, dict[str, Any]]:
        """The other plans that exist, by name."""
        bodies = [world.plan, *world.others.values()]
        return {
            b["metadata"]["name"]: b
            for b in bodies
            if b and b["metadata"]["name"] != self.plan and not (b is world.plan and world.deleted)
        }

    def _records(self, world: World) -> dict[str, dict[str, Any]]:
        return world.records(self.plan)

    def _selected(self, world: World) -> list[Node]:
        selector = self._spec(world)["nodeSelector"]
        return [n for n in world.nodes.values() if matches(selector, n.view().labels)]

    def _budget(self, world: World) -> int:
        value = (self._spec(world).get("strategy") or {}).get("maxUnavailable", 1)
        return max_unavailable(value, len(self._selected(world)))

    def _target(self, world: World) -> str:
        return str(self._spec(world)["target"]["version"])

    def _recent_external(self, world: World) -> bool:
        return world.now() - self.last_external < GRACE_S

    def _ours(self, world: World) -> list[str]:
        return [
            n.name
            for n in world.nodes.values()
            if n.annotations.get(CORDONED_BY_ANNOTATION) == self.plan
        ]

    # -- per entry -----------------------------------------------------------------------------

    def __call__(self, world: World, entry: Entry) -> None:
        self.checked += 1
        if entry.plan not in ("", self.plan):
            return  # another plan's engine: its own checker watches it
        acted = entry.kind in ("install", "reboot", "status", "rollback") or (
            entry.kind == "cordon" and entry.detail == self.plan
        )
        if acted and entry.node:
            self._on_claimed(world, entry)
        if self._deleted(world) and acted:
            self.fail(world, f"{entry.kind} {entry.node} after the plan was deleted")
        if entry.kind in EXTERNAL:
            self.last_external = entry.at
        match entry.kind:
            case "cordon" if entry.detail == self.plan:
                self._on_cordon(world, entry.node)
            case "install":
                self._on_install(world, entry.node)
                self._on_disruption(world, entry.node, "install")
            case "reboot":
                self._on_disruption(world, entry.node, "reboot")
            case "uncordon" if entry.detail == self.plan:
                self._on_uncordon(world, entry.node)
            case "status":
                self._on_status(world)
            case "operator-wrote-spec":
                self.fail(world, f"the operator wrote the plan's spec: {entry.detail}")
            case _:
                pass

    def _on_claimed(self, world: World, entry: Entry) -> None:
        """No action of ours on a node another plan holds."""
        node = world.nodes[entry.node]
        mark = node.annotations.get(CORDONED_BY_ANNOTATION)
        holders = [
            name
            for name, body in self._others(world).items()
            if entry.node in ((body.get("status") or {}).get("inFlight") or []) or mark == name
        ]
        if holders:
            self.fail(world, f"{entry.kind} of {entry.node}, which UpgradePlan {holders} holds")

    def _on_cordon(self, world: World, name: str) -> None:
        node = world.nodes[name]
        in_flight = self._status(world).get("inFlight") or []
        if name not in in_flight:
            self.fail(world, f"{name} cordoned before its slot was recorded (inFlight={in_flight})")
        budget = self._budget(world)
        ours = self._ours(world)
        if len(ours) > budget and not self._recent_external(world):
            self.fail(world, f"{len(ours)} nodes carry our cordon {ours}; maxUnavailable {budget}")
        others_out = [
            n.name
            for n in self._selected(world)
            if n.name != name and (not n.ready or n.unschedulable)
        ]
        if node.ready and len(others_out) + 1 > budget and not self._recent_external(world):
            self.fail(
                world,
                f"cordoned {name} with {others_out} already out of service; "
                f"maxUnavailable {budget}",
            )
        if node.control_plane:
            busy = [
                n.name
                for n in world.nodes.values()
                if n.control_plane and n.name != name and (n.name in in_flight or not n.up)
            ]
            if busy:
                self.fail(world, f"control plane {name} cordoned while {busy} out")
        elif not self._recent_external(world):
            target = self._target(world)
            records = self._records(world)
            unfinished = [
                n.name
                for n in self._selected(world)
                if n.control_plane
                and n.version != target
                # Done counts as finished even if another plan has since moved the node on
                and (records.get(n.name) or {}).get("phase") not in ("Failed", "RolledBack", "Done")
            ]
            if unfinished:
                self.fail(world, f"worker {name} cordoned before control planes {unfinished}")

    def _on_status(self, world: World) -> None:
        phase = self._status(world).get("phase")
        if phase == "Progressing":
            self.progressed = True
        elif phase == "Pending" and self.progressed:
            self.fail(world, "the plan went back to Pending after it had started", once="pending")

    def _on_uncordon(self, world: World, name: str) -> None:
        """An upgraded node goes back into service only once its kubelet reports this boot."""
        node = world.nodes[name]
        record = self._records(world).get(name) or {}
        if record.get("phase") != "Uncordoning":
            return  # a retry or failure giving the cordon back
        if not node.ready or node.reported_boot_id != node.boot_id:
            self.fail(
                world,
                f"{name} uncordoned as upgraded while its Node reports "
                f"{'Ready' if node.ready else 'NotReady'} from boot {node.reported_boot_id}, "
                f"not {node.boot_id}",
            )

    def _on_install(self, world: World, name: str) -> None:
        record = self._records(world).get(name) or {}
        attempt = str(record.get("startedAt"))  # each attempt starts at its own instant
        key = (name, attempt)
        self.installs[key] += 1
        if self.installs[key] > 1:
            self.fail(
                world,
                f"{name} installed {self.installs[key]} times in the attempt started {attempt}",
            )
        if record.get("phase") != "Upgrading":
            self.fail(world, f"{name} installed in phase {record.get('phase')}")

    def _on_disruption(self, world: World, name: str, what: str) -> None:
        node = world.nodes[name]
        # excused only when someone other than this plan lifted the cordon while the call
        # travelled: the engine's check came first; it must cordon again before the next
        # disruption, which is checked there
        lifted_in_flight = node.cordoned_when_sent and node.uncordoned_by != self.plan
        if not node.unschedulable and not lifted_in_flight:
            self.fail(world, f"{what} of {name}, which is not cordoned")
        policy = (self._spec(world).get("drain") or {}).get("onTimeout", "Fail")
        left = [p.name for p in world.pods_on(name) if not p.terminating and not p.daemon_set]
        if left and policy == "Fail":
            self.fail(world, f"{what} of {name} with pods still on it: {left}")
        if node.control_plane:
            down = [n.name for n in world.nodes.values() if n.control_plane and not n.up]
            if down and down != [name]:
                self.fail(world, f"{what} of control plane {name} while {down} down")

    # -- on a timer ----------------------------------------------------------------------------

    def tick(self, world: World, api_down_s: float = 0.0, clock_behind_s: float = 0.0) -> None:
        """Liveness: every in-flight node moves on before its deadline (plus slack).

        ``api_down_s``: how long the Kubernetes API was down since the deadline could have
        passed; nothing can be persisted then, so it adds to the slack.
        """
        if self._deleted(world):
            return  # gone: nothing of it is left to move on
        records = self._records(world)
        in_flight = self._status(world).get("inFlight") or []
        for name in list(self.unrecorded):
            if name not in in_flight or name in records:
                del self.unrecorded[name]
        for name in in_flight:
            record = records.get(name)
            if record is None:
                # The slot is stored before the record (a write that failed, or a crash, in
                # between): the engine must give such a slot back, not keep it
                since = self.unrecorded.setdefault(name, world.now())
                if world.now() - since > LIVENESS_SLACK_S + api_down_s:
                    self.fail(
                        world,
                        f"{name} in flight without a record for {world.now() - since:.0f}s",
                        once=f"unrecorded {name} {since}",
                    )
                continue
            deadline = parse_time(record.get("deadline"))
            slack = LIVENESS_SLACK_S + api_down_s + clock_behind_s
            if deadline is not None and world.now() > deadline + slack:
                self.fail(
                    world,
                    f"{name} still {record.get('phase')} {world.now() - deadline:.0f}s past "
                    "its deadline",
                    once=f"late {name} {record.get('phase')} {record.get('deadline')}",
                )

    # -- at the end ----------------------------------------------------------------------------

    def finish(self, world: World) -> None:
        if self._deleted(world):
            left = self._ours(world)
            if left:
                self.fail(world, f"the plan was deleted but {left} keep its cordon")
            return
        status = self._status(world)
        phase = status.get("phase")
        records = self._records(world)
        target = self._target(world)
        # another plan may since have moved a node on to its own target
        moved_on = {  # (deleted plans included: what they did stays done)
            str(body["spec"]["target"]["version"])
            for body in [world.plan, *world.others.values()]
            if body and body["metadata"]["name"] != self.plan
        }
        policy = self._spec(world).get("failurePolicy") or {}
        keep_cordoned = not policy.get("uncordonOnFailure", False)
        for name in self._ours(world):
            record = records.get(name) or {}
            kept = record.get("phase") in ("Failed", "RolledBack") and keep_cordoned
            if not kept:
                self.fail(world, f"{name} left cordoned by us (record: {record or 'none'})")
        if status.get("inFlight"):
            self.fail(world, f"run over with nodes in flight: {status.get('inFlight')}")
        failed = [
            n
            for n, r in records.items()
            if r.get("phase") in ("Failed", "RolledBack") and r.get("target") in (None, target)
        ]
        selected = self._selected(world)
        on_target = [n.name for n in selected if n.version == target or n.version in moved_on]
        if phase == "Completed":
            missing = [n.name for n in selected if n.name not in on_target and n.name not in failed]
            if missing:
                self.fail(world, f"plan Completed but {missing} are not on {target}")
            counts = status.get("counts") or {}
            updated = [n for n in on_target if n not in failed]
            if counts.get("updated") != len(updated):
                self.fail(
                    world,
                    f"counts.updated={counts.get('updated')} but {len(updated)} nodes "
                    f"are on {target} and not reported failed",
                )
            if status.get("observedTarget") != target:
                self.fail(world, f"observedTarget {status.get('observedTarget')} != {target}")
        max_failures = UpgradePlanSpec.model_validate(self._spec(world)).failure_policy.max_failures
        if len(failed) > max_failures and phase != "Failed":
            self.fail(world, f"{len(failed)} failed nodes (maxFailures {max_failures}) but {phase}")
        for name, record in records.items():
            current = record.get("target") in (None, target)
            chosen = any(n.name == name for n in selected)
            done = record.get("phase") == "Done" and current and chosen
            if done and world.nodes[name].version not in {target, *moved_on}:
                self.fail(world, f"{name} reported Done on {world.nodes[name].version}")
        if phase == "Waiting":
            self._check_wait(world, status)
        if phase == "Queued" and not any(
            (b.get("status") or {}).get("phase") not in ("Completed", "Failed")
            for b in self._others(world).values()
        ):
            self.fail(world, "plan rests Queued but every other plan has finished")
        if phase == "Paused" and not self._spec(world).get("paused"):
            self.fail(world, "plan rests Paused but spec.paused is false")

    def _check_wait(self, world: World, status: dict[str, Any]) -> None:
        """A plan at rest in Waiting must say why, and the reason must be true."""
        waiting = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Waiting"), None
        )
        if waiting is None or waiting.get("status") != "True":
            self.fail(world, f"plan Waiting without a Waiting condition: {status.get('message')}")
            return
        reason = waiting.get("reason")
        out = [n.name for n in self._selected(world) if not n.ready or n.unschedulable]
        cps_down = [n.name for n in world.nodes.values() if n.control_plane and not n.up]
        true = {
            "MaxUnavailable": len(out) >= self._budget(world),
            "NodeNotReady": any(not n.ready for n in world.nodes.values()),
            "EtcdUnhealthy": bool(cps_down) or world.etcd_unhealthy,
            "ControlPlaneOneAtATime": bool(cps_down),
            "Queued": any(
                (b.get("status") or {}).get("phase") not in ("Completed", "Failed")
                or (b.get("status") or {}).get("inFlight")
                for b in self._others(world).values()
            ),
            "NodesHeld": any(
                n.annotations.get(CORDONED_BY_ANNOTATION) in self._others(world)
                or any(
                    n.name in ((b.get("status") or {}).get("inFlight") or [])
                    for b in self._others(world).values()
                )
                for n in self._selected(world)
            ),
        }.get(str(reason), False)
        if not true:
            self.fail(
                world,
                f"plan rests in Waiting ({reason}: {waiting.get('message')}) but that is not "
                f"true: out of service {out}, control planes down {cps_down}",
            )
