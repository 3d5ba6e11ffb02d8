"""One seeded run: a fleet, a plan, a schedule of faults, the real engine, and the checker.

``generate(seed)`` draws everything from the seed; ``simulate(scenario)`` runs it on virtual
time and returns a ``Report`` with the violations and a short trace. The same seed always gives
the same run (run with PYTHONHASHSEED fixed, as ``make faults`` does).

The engine is the real ``PlanRollout`` (planner, state machine, status store, drain, etcd gate)
behind the simulated ports. It is killed and restarted at random moments (a new incarnation
keeps only what the plan object holds), as kopf's daemon would be after a crash or a
``helm upgrade``; Node changes wake it as the operator's node handler does.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodeos.core.canary import APPROVE_ANNOTATION
from nodeos.core.nodes import CORDONED_BY_ANNOTATION, NodeView
from nodeos.core.planner import PlanRef, plan_ref
from nodeos.engine.deletion import EngineStillRunningError, release_deleted_plan
from nodeos.engine.rollout import RETRY_ANNOTATION, EngineDeps, PlanRollout
from nodeos.engine.routing import Routing
from nodeos.ports.kube import KubeApiError
from sim.invariants import Checker, at
from sim.loop import DeadlockError, VirtualTimeLoop
from sim.ports import FaultRates, Killed, Life, SimKube, SimOsApi
from sim.world import NEW, NEWER, World

PLAN = "sim-plan"
RIVAL = "rival-plan"
TIME_LIMIT_S = 6 * 3600.0
STABLE_WAIT_S = 1800.0  # a plan Waiting this long with nothing in flight has come to rest
RESTING = ("Waiting", "Paused", "Queued")
NODE_EVENTS = frozenset(
    {
        "cordon",
        "uncordon",
        "node-notready",
        "boot",
        "kubelet-ready",
        "kubelet-notready",
        "reregister",
        "human-cordon",
        "node-crash",
    }
)


@dataclass
class Scenario:
    """Everything a run does, drawn from its seed."""

    seed: int
    control_planes: int
    workers: int
    apps: list[tuple[str, int, int]]  # name, replicas, minAvailable
    spec: dict[str, Any]
    rates: FaultRates
    kills: list[float]
    actions: list[tuple[float, str, str]]  # at, what, argument
    node_faults: dict[str, str]
    reboot_s: dict[str, float]
    rival: tuple[float, str, dict[str, Any]] | None = None  # at, creationTimestamp, spec

    def describe(self) -> str:
        strategy = self.spec["strategy"]
        return (
            f"seed {self.seed}: {self.control_planes} CP + {self.workers} workers, "
            f"maxUnavailable {strategy['maxUnavailable']}, "
            f"drain {self.spec['drain']}, failurePolicy {self.spec['failurePolicy']}, "
            f"rates t={self.rates.transient:.2f} lost={self.rates.lost_reply:.2f} "
            f"slow={self.rates.slow:.2f} perm={self.rates.permanent:.3f}, "
            f"kills at {[round(k) for k in self.kills]}, "
            f"actions {[(round(a), w, x) for a, w, x in self.actions]}, "
            f"node faults {self.node_faults}, Kubernetes outages {self.rates.kube_outages}, "
            f"OS API outages {self.rates.osapi_outages}"
            + (
                f", a second plan at {self.rival[0]:.0f}s created {self.rival[1]} "
                f"selecting {self.rival[2]['nodeSelector']} to {self.rival[2]['target']}"
                if self.rival
                else ""
            )
        )


def generate(seed: int) -> Scenario:
    """Draws a scenario from ``seed``."""
    rng = random.Random(seed)
    control_planes = rng.choice([0, 1, 3, 3])
    workers = rng.randint(2, 8)
    names = [f"cp-{i}" for i in range(control_planes)] + [f"w-{i}" for i in range(workers)]
    apps = []
    for i in range(rng.randint(0, 3)):
        replicas = rng.randint(2, max(2, workers * 2))
        apps.append((f"app{i}", replicas, replicas - rng.randint(1, 2)))
    spec: dict[str, Any] = {
        "target": {"version": NEW},
        "nodeSelector": {"matchLabels": {"pool": "sim"}},
        "strategy": {"maxUnavailable": rng.choice([1, 1, 2, 3, "50%"])},
        "drain": {
            "timeout": rng.choice(["30s", "2m", "10m"]),
            "onTimeout": rng.choice(["Fail", "Fail", "ForceDelete"]),
            "settle": "2s",
        },
        "failurePolicy": {
            "nodeTimeout": rng.choice(["5m", "15m"]),
            "retries": rng.choice([0, 1, 2]),
            "retryBackoff": rng.choice(["10s", "1m"]),
            "maxFailures": rng.choice([0, 1, 2]),
            "uncordonOnFailure": rng.random() < 0.3,
            "rollback": rng.random() < 0.2,
        },
    }
    quiet = rng.random() < 0.15
    rates = FaultRates(
        transient=0.0 if quiet else rng.choice([0.01, 0.05, 0.1]),
        lost_reply=0.0 if quiet else rng.choice([0.0, 0.02, 0.05]),
        slow=0.0 if quiet else rng.choice([0.0, 0.02, 0.1]),
        permanent=0.0 if quiet else rng.choice([0.0, 0.0, 0.002]),
    )
    if rng.random() < 0.2:
        start = rng.uniform(0, 400)
        rates.kube_outages.append((start, start + rng.uniform(10, 240)))
    if rng.random() < 0.2:
        node = rng.choice(names)
        start = rng.uniform(0, 400)
        rates.osapi_outages[node] = [(start, start + rng.uniform(10, 900))]
    kills = sorted(rng.uniform(0, 600) for _ in range(rng.choice([0, 0, 1, 2, 3, 5])))
    actions: list[tuple[float, str, str]] = []
    if rng.random() < 0.25:
        actions.append((rng.uniform(5, 300), "max-unavailable", str(rng.choice([1, 2, 3]))))
    if rng.random() < 0.2:
        pause = rng.uniform(5, 300)
        actions.append((pause, "pause", ""))
        actions.append((pause + rng.uniform(1, 300), "resume", ""))
    if rng.random() < 0.15:
        actions.append((rng.uniform(5, 400), "retarget", NEWER))
    if rng.random() < 0.25:
        when = rng.uniform(0, 400)
        node = rng.choice(names)
        actions.append((when, "human-cordon", node))
        actions.append((when + rng.uniform(5, 300), "human-uncordon", node))
    if rng.random() < 0.1:
        actions.append((rng.uniform(5, 400), "reregister", rng.choice(names)))
    if rng.random() < 0.08:
        actions.append((rng.uniform(1, 400), "delete-plan", ""))
    if rng.random() < 0.1:
        when = rng.uniform(5, 300)
        actions.append((when, "narrow-selector", rng.choice(names)))
        if rng.random() < 0.5:
            actions.append((when + rng.uniform(10, 300), "widen-selector", ""))
    if rng.random() < 0.1:
        actions.append(
            (rng.uniform(5, 400), "clock-jump", str(rng.choice([-90, -30, 30, 90, 600])))
        )
    if rng.random() < 0.15:
        start = rng.uniform(0, 300)
        actions.append((start, "etcd-unhealthy", ""))
        actions.append((start + rng.uniform(5, 200), "etcd-healthy", ""))
    node_faults: dict[str, str] = {}
    for name in names:
        roll = rng.random()
        if roll < 0.04:
            node_faults[name] = "install-fails"
        elif roll < 0.07:
            node_faults[name] = "never-returns"
        elif roll < 0.10:
            node_faults[name] = "boots-old"
        elif roll < 0.13:
            node_faults[name] = "sick-on-new"
    # some reboots are over before the Node is seen NotReady (a Ready left from the old boot)
    reboot_s = {name: rng.choice([rng.uniform(3, 60), 0.3]) for name in names}
    rival = _rival(seed, names, actions)
    _recreation(seed, actions)
    actions.sort()
    return Scenario(
        seed,
        control_planes,
        workers,
        apps,
        spec,
        rates,
        kills,
        actions,
        node_faults,
        reboot_s,
        rival,
    )


def _recreation(seed: int, actions: list[tuple[float, str, str]]) -> None:
    """Half the deleted plans are created again under the same name (own generator)."""
    rng = random.Random(seed * 389 + 17)
    for when, what, _ in list(actions):
        if what == "delete-plan" and rng.random() < 0.5:
            actions.append((when + rng.uniform(5, 300), "recreate-plan", ""))


def _rival(
    seed: int, names: list[str], actions: list[tuple[float, str, str]]
) -> tuple[float, str, dict[str, Any]] | None:
    """Sometimes a second plan over some of the same nodes (its own generator: the draws of
    seeds that have none stay as they were)."""
    rng = random.Random(seed * 613 + 11)
    if rng.random() >= 0.15:
        return None
    some = sorted(rng.sample(names, rng.randint(1, len(names))))
    spec: dict[str, Any] = {
        "target": {"version": rng.choice([NEW, NEWER])},
        "nodeSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": some}
            ]
        },
        "strategy": {"maxUnavailable": rng.choice([1, 2, "50%"])},
        "drain": {"timeout": "2m", "onTimeout": "Fail", "settle": "2s"},
        "failurePolicy": {"nodeTimeout": "15m", "retries": 1, "retryBackoff": "10s"},
    }
    older = rng.random() < 0.3
    when = 0.0 if older else rng.uniform(0, 500)
    created = "2026-01-04T00:00:00Z" if older else at(when).strftime("%Y-%m-%dT%H:%M:%SZ")
    if rng.random() < 0.5:  # the first plan retried (or re-run) while the second one runs
        actions.append((when + rng.uniform(10, 600), "retry", ""))
    return when, created, spec


@dataclass
class Report:
    """What a run found."""

    scenario: Scenario
    violations: list[str]
    trace: list[str]
    phase: str
    virtual_s: float
    wall_s: float
    entries: int
    incarnations: int
    loop_errors: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, node: str) -> dict[str, Any]:
        """The node's record at the end, as its Node carries it ({} when it has none)."""
        return self.records.get(node, {})

    @property
    def ok(self) -> bool:
        return not self.violations

    def explain(self, lines: int = 40) -> str:
        head = self.scenario.describe()
        body = "\n".join(self.trace[-lines:])
        found = "\n".join(f"  VIOLATION {v}" for v in self.violations)
        return f"{head}\n{found}\nlast journal entries:\n{body}"


class _Driver:
    def __init__(self, scenario: Scenario, loop: VirtualTimeLoop) -> None:
        self.scenario = scenario
        self.loop = loop
        self.rng = random.Random(scenario.seed * 7919 + 1)
        self.world = World(random.Random(scenario.seed * 104729 + 3), loop)
        self.checker = Checker(PLAN)
        self.checkers = [self.checker]
        self.world.checks.append(self.checker)
        self.world.checks.append(self._wake_on_node_event)
        self.life: Life | None = None
        self.rollout: PlanRollout | None = None
        self.rollouts: dict[str, PlanRollout] = {}  # every plan's engine in this incarnation
        self.tasks: list[asyncio.Task[None]] = []
        self.kube: SimKube | None = None
        self.finalizers: list[asyncio.Future[None]] = []
        self.clock_offset = 0.0
        self.task: asyncio.Task[None] | None = None
        self.incarnations = 0
        self.recreations = 0
        self.loop_errors: list[str] = []
        self.cues: list[tuple[Callable[[World, Any], bool], Callable[[], None]]] = []
        self._now_cues: dict[int, Callable[[], None]] = {}
        self.world.checks.append(self._on_cue)
        self._build()

    def _build(self) -> None:
        s = self.scenario
        for i in range(s.control_planes):
            self.world.add_node(f"cp-{i}", control_plane=True)
        for i in range(s.workers):
            self.world.add_node(f"w-{i}", control_plane=False)
        for name, fault in s.node_faults.items():
            node = self.world.nodes[name]
            node.install_fails = fault == "install-fails"
            node.never_returns = fault == "never-returns"
            node.boots_old = fault == "boots-old"
            node.sick_on_new = fault == "sick-on-new"
        for name, seconds in s.reboot_s.items():
            self.world.nodes[name].reboot_s = seconds
        for app, replicas, min_available in s.apps:
            self.world.add_app(app, replicas, min_available)
        self.world.plan = {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "UpgradePlan",
            "metadata": {
                "name": PLAN,
                "uid": "plan-uid",
                "generation": 1,
                "creationTimestamp": "2026-01-05T00:00:00Z",
                "annotations": {},
            },
            "spec": s.spec,
        }

    def when(
        self, cue: Callable[[World, Any], bool], then: Callable[[], None], *, at_once: bool = False
    ) -> None:
        """Runs ``then`` once, right after the first journal entry that ``cue`` accepts.

        ``at_once``: inside the call that made the entry (e.g. while a status write is in
        flight), rather than at the loop's next turn.
        """
        if at_once:

            def run_now() -> None:
                then()

            self.cues.append((cue, lambda: None))
            self._now_cues[id(self.cues[-1])] = run_now
        else:
            self.cues.append((cue, then))

    def kill_when(self, cue: Callable[[World, Any], bool]) -> None:
        """Kills (and restarts) the engine right after the entry a test waits for."""
        self.when(cue, self._kill_and_restart)

    def _on_cue(self, world: World, entry: Any) -> None:
        for pair in list(self.cues):
            cue, then = pair
            if cue(world, entry):
                self.cues.remove(pair)
                now = self._now_cues.pop(id(pair), None)
                if now is not None:
                    now()
                else:
                    self.loop.call_soon(then)

    def _wake_on_node_event(self, world: World, entry: Any) -> None:
        if entry.kind in NODE_EVENTS:
            for rollout in self.rollouts.values():
                rollout.node_moved(entry.node)
                rollout.wake.set()

    def clock(self) -> datetime.datetime:
        """The operator's wall clock: virtual time, plus any jump the scenario made."""
        return at(self.loop.time() + self.clock_offset)

    # -- engine incarnations -------------------------------------------------------------------

    def start_engine(self) -> None:
        self.incarnations += 1
        life = Life(self.incarnations)
        rng = random.Random(self.scenario.seed * 31 + self.incarnations)
        kube = SimKube(self.world, self.scenario.rates, rng, life)
        osapi = SimOsApi(self.world, self.scenario.rates, rng, life)
        self.life, self.kube, self.rollouts, self.tasks = life, kube, {}, []
        rollout = self._start_rollout(PLAN, osapi)
        self.rollout = rollout
        self.task = self.tasks[0]
        for name in self.world.others:
            self._start_rollout(name, SimOsApi(self.world, self.scenario.rates, rng, life, name))
        if self.world.plan["metadata"].get("deletionTimestamp"):
            self.finalizers.append(asyncio.ensure_future(self._finalize(life, kube, rollout)))

    def _start_rollout(self, name: str, osapi: SimOsApi) -> PlanRollout:
        """The plan's daemon in this incarnation (sharing the Kubernetes port, as one process)."""
        assert self.kube is not None and self.life is not None
        osapi.by = name
        deps = EngineDeps(
            kube=self.kube,
            osapi=osapi,
            routing=Routing("Node"),
            clock=self.clock,
            poll_s=0.5,
        )
        world = self.world
        views: dict[str, NodeView] = {}

        def current_views() -> dict[str, NodeView]:
            """One dict kept current in place, as the Node watch keeps it: every view replaced,
            and a node whose view changed (or is gone) named to the engine (``node_moved``),
            so the engine carries its selection over as it does in the operator."""
            fresh = {n: node.view() for n, node in world.nodes.items()}
            for gone in [n for n in views if n not in fresh]:
                del views[gone]
                rollout.node_moved(gone)
            for n, view in fresh.items():
                before = views.get(n)
                views[n] = view
                if before != view:
                    rollout.node_moved(n)
            return views

        rollout = PlanRollout(
            name,
            f"{name}-uid",
            deps,
            nodes=current_views,
            body=lambda: world.body_of(name),
            plans=self._plan_refs,
        )
        self.rollouts[name] = rollout
        self.tasks.append(asyncio.ensure_future(self._daemon(rollout, self.life)))
        return rollout

    def _plan_refs(self) -> list[PlanRef]:
        """What the operator's plan index holds: every plan that exists."""
        bodies = [*([] if self.world.deleted else [self.world.plan]), *self.world.others.values()]
        return [plan_ref(body) for body in bodies if body]

    def _create_rival(self) -> None:
        assert self.scenario.rival is not None
        _, created, spec = self.scenario.rival
        self.world.add_plan(RIVAL, copy.deepcopy(spec), created)
        checker = Checker(RIVAL)
        self.checkers.append(checker)
        self.world.checks.append(checker)
        if self.life is not None and self.life.alive and self.rollout is not None:
            rng = random.Random(self.scenario.seed * 37 + self.incarnations)
            self._start_rollout(
                RIVAL, SimOsApi(self.world, self.scenario.rates, rng, self.life, RIVAL)
            )

    async def _finalize(self, life: Life, kube: SimKube, rollout: PlanRollout) -> None:
        """kopf's deletion handler in this incarnation, retried until it succeeds."""
        try:
            while not self.world.deleted:
                try:
                    released = await release_deleted_plan(kube, PLAN, rollout)
                except (EngineStillRunningError, KubeApiError):
                    await asyncio.sleep(5.0)
                    continue
                self.world.deleted = True
                self.world.record("plan-deleted", detail=f"released {released}")
        except Killed:
            return

    async def _daemon(self, rollout: PlanRollout, life: Life) -> None:
        """What kopf does with a daemon: run it; if it raises, log and restart it later."""
        try:
            await rollout.run(lambda: not life.alive)
        except (Killed, asyncio.CancelledError):
            return
        except Exception as error:  # the engine's loop must never die of an error
            self.world.record("engine-crashed", detail=repr(error))
            self.loop_errors.append(repr(error))
            self.checker.fail(self.world, f"the engine's loop died: {error!r}")
            if life.alive:
                self.loop.call_later(60.0, self._restart_after_crash, life)

    def _restart_after_crash(self, life: Life) -> None:
        if life.alive and self.life is life and self.rollout is not None:
            life.alive = False
            self.start_engine()

    def kill(self) -> None:
        if self.life is None or self.task is None:
            return
        self.world.record("engine-killed", detail=f"incarnation {self.life.number}")
        self.life.alive = False
        for task in self.tasks:
            task.cancel()
        self.rollout = None
        self.rollouts = {}

    # -- the run -------------------------------------------------------------------------------

    def schedule(self) -> None:
        for when in self.scenario.kills:
            self.loop.call_later(when, self._kill_and_restart)
        for when, what, arg in self.scenario.actions:
            self.loop.call_later(when, self._act, what, arg)
        if self.scenario.rival is not None:
            self.loop.call_later(self.scenario.rival[0], self._create_rival)

    def _kill_and_restart(self) -> None:
        if self.rollout is None:
            return  # already dead, its restart is on the way: one engine at a time
        self.kill()
        self.loop.call_later(self.rng.uniform(0.5, 20.0), self.start_engine)

    def _act(self, what: str, arg: str) -> None:
        world = self.world
        match what:
            case "max-unavailable":
                value = int(arg)
                world.edit_spec(
                    lambda s: s["strategy"].update(maxUnavailable=value), f"maxUnavailable={arg}"
                )
            case "pause":
                world.edit_spec(lambda s: s.update(paused=True), "paused=true")
            case "resume":
                world.edit_spec(lambda s: s.update(paused=False), "paused=false")
            case "retarget":
                world.edit_spec(lambda s: s["target"].update(version=arg), f"target={arg}")
            case "human-cordon":
                node = world.nodes[arg]
                if not node.unschedulable:
                    world.record("human-cordon", arg)
                    world.cordon(arg, None)
            case "human-uncordon":
                node = world.nodes[arg]
                if node.unschedulable and CORDONED_BY_ANNOTATION not in node.annotations:
                    world.record("human-uncordon", arg)
                    world.uncordon(arg, "someone else")
            case "reregister":
                if CORDONED_BY_ANNOTATION not in world.nodes[arg].annotations:
                    world.reregister(arg, replaced=self.rng.random() < 0.5)
            case "etcd-unhealthy":
                world.etcd_unhealthy = True
            case "etcd-healthy":
                world.etcd_unhealthy = False
            case "retry":
                world.annotate(RETRY_ANNOTATION, "true")
            case "approve":
                world.annotate(APPROVE_ANNOTATION, "true")
            case "narrow-selector":
                excluded = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [arg]}
                world.edit_spec(
                    lambda s: s["nodeSelector"].update(matchExpressions=[excluded]),
                    f"selector excludes {arg}",
                )
            case "widen-selector":
                world.edit_spec(
                    lambda s: s["nodeSelector"].pop("matchExpressions", None), "selector widened"
                )
            case "clock-jump":
                self.clock_offset += float(arg)
                world.record("clock-jump", detail=f"{arg}s")
            case "recreate-plan":
                if not world.deleted:
                    self.loop.call_later(30.0, self._act, what, arg)  # kubectl: still there
                    return
                self._recreate()
            case "delete-plan":
                world.plan["metadata"]["deletionTimestamp"] = "2026-01-05T00:00:00Z"
                world.resource_version += 1
                world.record("plan-deleting")
                if self.life is not None and self.rollout is not None and self.kube is not None:
                    handler = self._finalize(self.life, self.kube, self.rollout)
                    self.finalizers.append(asyncio.ensure_future(handler))

    def _recreate(self) -> None:
        """`kubectl apply` of the same plan after its deletion finished: a new object."""
        world = self.world
        self.recreations += 1
        world.plan = {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "UpgradePlan",
            "metadata": {
                "name": PLAN,
                "uid": f"plan-uid-{self.recreations}",
                "generation": 1,
                "creationTimestamp": at(self.loop.time()).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "annotations": {},
            },
            "spec": copy.deepcopy(self.scenario.spec),
        }
        world.deleted = False
        world.resource_version += 1
        self.checker.progressed = False
        world.record("plan-recreated")
        if self.life is not None and self.life.alive and self.kube is not None:
            rng = random.Random(self.scenario.seed * 53 + self.recreations)
            osapi = SimOsApi(world, self.scenario.rates, rng, self.life, PLAN)
            self.rollout = self._start_rollout(PLAN, osapi)

    def _api_down_since(self, start: float) -> float:
        now = self.loop.time()
        return sum(
            max(0.0, min(end, now) - max(begin, start))
            for begin, end in self.scenario.rates.kube_outages
        )

    def finished(self) -> bool:
        quiet = self.loop.time() > max(
            [
                *self.scenario.kills,
                *(a[0] for a in self.scenario.actions),
                self.scenario.rival[0] if self.scenario.rival else 0.0,
                0.0,
            ]
        )
        bodies = [*([] if self.world.deleted else [self.world.plan]), *self.world.others.values()]
        return quiet and all(_settled(body) for body in bodies)

    def resting(self) -> bool:
        """Some plan has come to rest waiting (it may wait for a long time)."""
        bodies = [*([] if self.world.deleted else [self.world.plan]), *self.world.others.values()]
        return any((body.get("status") or {}).get("phase") in RESTING for body in bodies)

    async def run(self) -> str:
        self.start_engine()
        self.schedule()
        settled_at: float | None = None
        while self.loop.time() < TIME_LIMIT_S:
            await asyncio.sleep(5.0)
            for checker in self.checkers:
                checker.tick(
                    self.world,
                    self._api_down_since(self.loop.time() - 3600),
                    clock_behind_s=max(0.0, -self.clock_offset),
                )
            if self.finished():
                settled_at = settled_at if settled_at is not None else self.loop.time()
                waiting = self.resting()
                if self.loop.time() - settled_at >= (STABLE_WAIT_S if waiting else 30.0):
                    break
            else:
                settled_at = None
        else:
            status = self.world.status()
            self.checker.fail(
                self.world,
                f"no end after {TIME_LIMIT_S:.0f}s: phase {status.get('phase')}, "
                f"message {status.get('message')!r}",
            )
        self.kill()
        for checker in self.checkers:
            checker.finish(self.world)
        return "Deleted" if self.world.deleted else str(self.world.status().get("phase"))


def simulate(scenario: Scenario, configure: Callable[[_Driver], None] | None = None) -> Report:
    """Runs one scenario to its end on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    driver = _Driver(scenario, loop)
    if configure is not None:
        configure(driver)
    started = time.perf_counter()
    try:
        phase = loop.run_until_complete(driver.run())
    except DeadlockError as error:
        driver.checker.fail(driver.world, f"deadlock: {error}")
        phase = "Deadlock"
    finally:
        _close(loop)
    return Report(
        scenario=scenario,
        violations=[v for checker in driver.checkers for v in checker.violations],
        trace=[str(e) for e in driver.world.journal],
        phase=phase,
        virtual_s=loop.time(),
        wall_s=time.perf_counter() - started,
        entries=len(driver.world.journal),
        incarnations=driver.incarnations,
        loop_errors=driver.loop_errors,
        status=driver.world.status(),
        records=driver.world.records(),
    )


def _settled(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    return (
        status.get("phase") in ("Completed", "Failed", *RESTING)
        and not status.get("inFlight")
        and status.get("observedGeneration") == body["metadata"]["generation"]
    )


def _close(loop: VirtualTimeLoop) -> None:
    loop.settle()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
