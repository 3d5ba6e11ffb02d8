"""Runs one UpgradePlan: plans each step, claims slots, and drives a worker per in-flight node.

The loop wakes on node events, on worker progress and on deadlines. Every step it asks the
planner what may start; it records each new node's slot in the plan status (a guarded write)
*before* a worker touches the node; it resumes workers for nodes that were in flight when the
operator last stopped; and it writes the plan's summary (phase, counts, conditions, preview,
ETA). Workers feed each action's result to the state machine and persist every phase change.
A finished node's slot goes back in the step's next write, the one that claims it for the next
node, whose boot ID and version are read meanwhile.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodeos.core import planner
from nodeos.core import statemachine as sm
from nodeos.core.events import EventBudget
from nodeos.core.nodes import NodeView, matches
from nodeos.engine import metrics, plan_edits
from nodeos.engine.actions import NodeContext, RecordRide, perform, read_before_cordon
from nodeos.engine.etcd import etcd_problem
from nodeos.engine.health import first_failing
from nodeos.engine.prometheus import prometheus_problem
from nodeos.engine.report import (
    announce,
    condition,
    export_metrics,
    log_plan_change,
    summarise,
    waiting_reason,
    warn_when_stuck,
)
from nodeos.engine.routing import Routing
from nodeos.engine.snapshot import InvalidSpecError, PlanReader, Snapshot
from nodeos.engine.status import Draft, StatusStore
from nodeos.models.nodeapi import OsApiAccess
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec
from nodeos.ports.fence import FencedError
from nodeos.ports.kube import ConflictError, KubeApi, KubeApiError
from nodeos.ports.osapi import OsApi, OsVersion
from nodeos.ports.prometheus import PrometheusApi

RETRY_ANNOTATION = plan_edits.RETRY_ANNOTATION
_WORKER_RETRY_S = 2.0
_ERROR_BACKOFF_S = 1.0
_STOP_GRACE_S = 20.0
_MAX_BACKOFF_S = 30.0
log = logging.getLogger(__name__)
_IDLE_WAKE_S = 5.0
# A step's planning costs CPU in proportion to the fleet; after a step, the next waits at
# least this many times as long as its planning took (at most _MAX_STEP_GAP_S), so a large
# fleet's stream of wakes cannot starve the workers
_STEP_GAP_FACTOR = 2.0
_MAX_STEP_GAP_S = 1.0
# A check that waits for the Node's own report runs again when the watch shows the Node's
# health changed (Ready, boot ID, OS image), and at least this often should a watch event be
# late. A rebooting node is asked for its boot ID the same way: when its kubelet reports it
# Ready (NotReady says it is going down, not that it is back), and otherwise at intervals that
# double from _NODE_WAIT_S up to _REBOOT_WAIT_S. Polling every poll_s cost ten OS API calls per
# reboot; every 2 s, five.
_NODE_WAIT_S = 2.0
_REBOOT_WAIT_S = 8.0
_FREES_SLOT = frozenset({*planner.TERMINAL, "Pending"})
# A worker whose node is done leaves its slot to the next step, which gives it back in the write
# that claims it for the next node; should no step get to it in this long (a step that fails,
# a spec that does not parse), the worker gives it back in a write of its own
_HANDOVER_S = 2.0


OsApiFactory = Callable[[OsApiAccess], Awaitable[tuple[OsApi, Routing]]]


@dataclass
class EngineDeps:
    """The ports and settings every plan shares."""

    kube: KubeApi
    osapi: OsApi
    routing: Routing
    osapi_for: OsApiFactory | None = None  # a plan (or NodeOSConfig) with its own OS API access
    operator_node: str | None = None
    own_pod: tuple[str, str] | None = None
    clock: Callable[[], datetime.datetime] = field(
        default=lambda: datetime.datetime.now(datetime.UTC)
    )
    poll_s: float = 0.5
    prometheus: PrometheusApi | None = None  # for plans with a prometheus gate


class PlanRollout:
    """The engine for one plan, alive as long as the plan's kopf daemon."""

    def __init__(
        self,
        name: str,
        uid: str,
        deps: EngineDeps,
        nodes: Callable[[], Mapping[str, NodeView]],
        body: Callable[[], Mapping[str, Any]],
        plans: Callable[[], list[planner.PlanRef]] = list,
    ) -> None:
        self.name = name
        self.uid = uid
        self.deps = deps
        self.nodes = nodes
        self.body = body
        self.plans = plans
        self.store = StatusStore(deps.kube, name)
        self.owner = f"plan/{name}"  # what its metric series are remembered under
        self._logged_phase: str | None = None
        self._waiting_for: str | None = None  # the Waiting reason last reported
        self.wake = asyncio.Event()
        self.workers: dict[str, asyncio.Task[None]] = {}
        self._node_moved: dict[str, asyncio.Event] = {}  # set when the node's view changes
        # When each slot was freed, oldest first; each cordon takes the oldest, so every slot's
        # own handover is measured even when several are freed at once
        self._freed_at: list[float] = []
        self._finishing: dict[str, _Finishing] = {}  # workers whose slot the next step gives back
        # Each claimed node's boot ID and version, read while its slot is being written
        self._read_ahead: dict[str, asyncio.Task[tuple[str, OsVersion]]] = {}
        self._durations: list[float] = []
        self.osapi: OsApi = deps.osapi
        self.routing: Routing = deps.routing
        self._access: OsApiAccess | None = None
        self._last_error: str | None = None
        self._stopping = False
        self.finished = asyncio.Event()
        self.reader = PlanReader(body)
        self._event_budget = EventBudget()
        self._planning_s = 0.0  # time the current step spent in the planner (on the loop)
        self._moved: set[str] = set()  # nodes whose views changed since the last selection
        self._selection_cache: tuple[Mapping[str, NodeView], Any, planner.Selection] | None = None
        self._announcing: set[asyncio.Task[None]] = set()  # Events posted off the step's path
        self._policy_made: tuple[UpgradePlanSpec, RolloutPolicy] | None = None

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Reconciles until ``stopped()``; no error stops it, each is reported and retried.

        In-flight workers are cancelled on the way out, not abandoned.
        """
        failures = 0
        loaded = False
        try:
            while not stopped() and not self.deleting():
                self.wake.clear()
                try:
                    if not loaded:
                        await self.store.load()
                        loaded = True
                        self._logged_phase = self.store.summary.phase
                        self._waiting_for = waiting_reason(self.store.summary)
                        for name in list(self.store.summary.in_flight):
                            self._spawn(name, resumed=True)
                    self._planning_s = 0.0
                    timeout = await self.step()
                    spent = self._planning_s
                    failures = 0
                except Exception as error:  # any API, any bad input: report, back off, retry
                    failures += 1
                    timeout = min(_ERROR_BACKOFF_S * 2 ** min(failures - 1, 5), _MAX_BACKOFF_S)
                    spent = 0.0
                    await self._report_error(error, loaded)
                gap = min(_MAX_STEP_GAP_S, _STEP_GAP_FACTOR * spent, timeout)
                if gap > 0:
                    await asyncio.sleep(gap)  # wakes meanwhile are kept for after it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout - gap)
        finally:
            await self._stop_workers()
            await self.store.close()
            self.finished.set()

    def deleting(self) -> bool:
        """The plan is marked for deletion: stop, and let the deletion handler clean up."""
        return bool(self.body()["metadata"].get("deletionTimestamp"))

    async def _stop_workers(self) -> None:
        """Lets workers stop between actions, cancelling those still busy after a grace period.

        A call cancelled mid-flight may still take effect (it runs in a thread), so a worker is
        best stopped where it is not waiting on one.
        """
        self._stopping = True
        for name in list(self._read_ahead):
            self._drop_read_ahead(name)
        running = [task for task in [*self.workers.values(), *self._announcing] if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=_STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _report_error(self, error: Exception, loaded: bool) -> None:
        text = (
            str(error)
            if isinstance(error, InvalidSpecError)
            else f"{type(error).__name__}: {error}"
        )
        text = text[:1024]
        if text != self._last_error:
            log.warning("%s: reconcile failed, retrying: %s", self.name, text)
            self._last_error = text
        if not loaded:
            return
        now = self.deps.clock()
        with contextlib.suppress(Exception):
            invalid = isinstance(error, InvalidSpecError)
            reason = "InvalidSpec" if invalid else type(error).__name__

            def record(draft: Draft) -> None:
                condition(draft, "ReconcileError", True, reason, text, now)
                if invalid:  # only a person can fix the spec
                    condition(draft, "Degraded", True, reason, text, now)

            await self.store.commit(record)

    def _snapshot(self) -> Snapshot:
        return self.reader.read()

    def _worker_spec(self) -> UpgradePlanSpec:
        """The spec for in-flight nodes: the current one, or the last valid one if it is not."""
        try:
            return self._snapshot().spec
        except InvalidSpecError:
            if self.reader.last_good is None:
                raise
            return self.reader.last_good.spec

    async def step(self) -> float:
        """One reconciliation; returns how long to sleep unless woken earlier."""
        snap = self._snapshot()
        spec = snap.spec
        now = self.deps.clock()
        await self._use_access(spec)
        if await plan_edits.handle_spec_change(self.store, self.deps.kube, self.name, snap):
            for name in self.store.summary.in_flight:
                self._spawn(name, resumed=True)
        selection = self._selection(spec)
        selected = selection.nodes
        ordered = selection.in_order(spec, self.deps.operator_node)
        status = self.store.summary
        canary_hold = await plan_edits.canary_hold(
            self.store,
            self.deps.kube,
            self.name,
            snap,
            planner.canary_nodes(spec, ordered, self.deps.operator_node),
            _records(self.store.records, status.in_flight, spec),
            now,
        )
        plans = self.plans()
        me = planner.PlanRef(
            self.name,
            snap.created,
            status.phase,
            spec.node_selector.to_api(),
            frozenset(status.in_flight),
        )
        views = list(self.nodes().values())
        behind = planner.queued_behind(me, plans, views)
        held_nodes = planner.held_elsewhere(self.name, plans, views)

        asked: list[tuple[Mapping[str, NodeProgress], list[str], planner.Decision]] = []

        def decide(records: Mapping[str, NodeProgress], in_flight: list[str]) -> planner.Decision:
            # the report asks again after the claims; when nothing was claimed or changed
            # meanwhile (most steps of a full fleet), the answer is the one already made
            if asked and asked[0][0] == records and asked[0][1] == in_flight:
                return asked[0][2]
            clock = asyncio.get_running_loop().time
            began = clock()
            decision = planner.plan_step(
                spec,
                records,
                in_flight,
                ordered,
                now,
                operator_node=self.deps.operator_node,
                canary_hold=canary_hold,
                behind=behind,
                held=held_nodes,
                unselected_in_flight=[
                    view
                    for name in in_flight
                    if name not in selected and (view := self.nodes().get(name)) is not None
                ],
                in_order=True,
            )
            self._planning_s += clock() - began
            asked[:] = [(dict(records), list(in_flight), decision)]
            return decision

        # slots whose nodes are done: given back in this step's write (with the next claims)
        handing_back = {
            name: finishing
            for name, finishing in self._finishing.items()
            if name in status.in_flight and self._progress(name) == finishing.record
        }
        in_flight = [name for name in status.in_flight if name not in handing_back]
        decision = decide(_records(self.store.records, in_flight, spec), in_flight)
        if decision.complete and self._announcing:
            await asyncio.wait(list(self._announcing))  # every node's last Event before Completed
        held: planner.Waiting | None = None
        start = list(decision.start)
        needs_etcd = spec.strategy.control_plane.require_healthy_etcd
        if start and needs_etcd and any(selected[name].control_plane for name in start):
            problem = await etcd_problem(
                self.osapi,
                # every member counts, whether or not this plan selects its node
                [n for n in self.nodes().values() if n.control_plane],
                self.routing.target,
            )
            if problem is not None:
                start, held = [], planner.Waiting("EtcdUnhealthy", problem)
        if start and spec.health_checks:
            failing = await first_failing(self.deps.kube, spec.health_checks, "Before")
            if failing is not None:
                verdict = failing[1]
                reason = "HealthCheckError" if verdict.error else "HealthCheckFailing"
                start, held = [], planner.Waiting(reason, verdict.message)
        if start and spec.prometheus is not None:
            gate = (
                ("PrometheusUnavailable", "this operator has no Prometheus client")
                if self.deps.prometheus is None
                else await prometheus_problem(self.deps.prometheus, spec.prometheus)
            )
            if gate is not None:
                start, held = [], planner.Waiting(*gate)

        def report(draft: Draft) -> None:
            flying = frozenset(draft.in_flight)
            for name, record in list(draft.nodes.items()):
                node = selected.get(name)
                if name not in flying and node and planner.outdated(record, node, spec):
                    del draft.nodes[name]  # it spoke of a Node that is no longer there
            fresh = decide(
                {
                    n: r
                    for n, r in draft.nodes.items()
                    if planner.current(r, spec.target.version, flying)
                },
                draft.in_flight,
            )
            if held is not None:
                fresh = _waiting(fresh, held)
            summarise(draft, snap.spec, snap.generation, fresh, now, self._durations)

        phase_before = self._logged_phase
        policy = self._policy(spec)
        first: dict[str, NodeProgress] = {}  # the records of the nodes this write claims

        def hand_over_and_report(draft: Draft) -> None:
            # One write: the finished nodes' slots given back, then the slots claimed (a node
            # given back may be claimed again by the same write), and the summary that counts
            # them. The step's checks took time (etcd, health checks): a node another plan
            # took meanwhile is left to it, as seen now, just before the write.
            for name, finishing in handing_back.items():
                _release(draft, name, expected=finishing.record)
            first.clear()
            if start:
                taken = planner.held_elsewhere(
                    self.name, self.plans(), [selected[n] for n in start]
                )
                free = [name for name in start if name not in taken]
                self._claim(draft, free, spec, policy, now, selected, first)
            report(draft)

        self._read_ahead_of_cordon([selected[name] for name in start])
        try:
            await self.store.commit(hand_over_and_report, nodes=list(handing_back))
        except BaseException:
            for name in start:
                self._drop_read_ahead(name)
            raise
        finally:
            self._settle(handing_back)
        for name in start:
            if name not in first:
                self._drop_read_ahead(name)
        for record in first.values():
            # with the cordon (the same write) or on its own within DEFER_S; a slot whose
            # record never arrived is given back by the resumed worker, the node untouched
            self.store.stage(functools.partial(_put, record=record), record)
        for name in first:
            self._spawn(name, resumed=False)
        # in the background: a step must not wait on Events while slots are free
        self._announce_soon(
            [
                (NodeProgress(name=name, phase="Pending"), claimed)
                for name in first
                if (claimed := self._progress(name)) is not None and claimed.phase == "Cordoning"
            ]
        )
        for name in self.store.summary.in_flight:
            self._spawn(name, resumed=True)  # only where no worker runs (one failed)
        self._last_error = None
        log_plan_change(self.name, phase_before, self.store.summary)
        self._logged_phase = self.store.summary.phase
        self._waiting_for = await warn_when_stuck(
            self.deps.kube, self.name, self.uid, self._waiting_for, self.store.summary
        )
        export_metrics(self.name, self.store.summary, self.store.records)
        return self._sleep_for(now)

    async def _use_access(self, spec: UpgradePlanSpec) -> None:
        """Switches to the plan's own OS API access when it names one."""
        if spec.os_api == self._access:
            return
        if spec.os_api is None or self.deps.osapi_for is None:
            self.osapi, self.routing = self.deps.osapi, self.deps.routing
        else:
            self.osapi, self.routing = await self.deps.osapi_for(spec.os_api)
        self._access = spec.os_api

    # -- slots and workers ---------------------------------------------------------------------

    def _claim(
        self,
        draft: Draft,
        names: list[str],
        spec: UpgradePlanSpec,
        policy: RolloutPolicy,
        now: datetime.datetime,
        selected: Mapping[str, NodeView],
        claimed: dict[str, NodeProgress],
    ) -> None:
        """Takes the slots in the ledger; each node's first record goes to ``claimed``."""
        for name in names:
            if name not in draft.in_flight:
                draft.in_flight.append(name)
            node = selected[name]
            previous = draft.nodes.get(name)
            if previous is not None and (
                not planner.current(previous, spec.target.version, [])
                or planner.outdated(previous, node, spec)
            ):
                previous = None  # of another target or another Node: this is a first attempt
            claimed[name] = sm.start(
                name, previous, spec.target.version, policy, now, node_uid=node.uid
            )
        draft.summary.setdefault("started_at", now)

    def _spawn(self, name: str, *, resumed: bool) -> None:
        running = self.workers.get(name)
        if running is not None and not running.done():
            return
        self.workers[name] = asyncio.create_task(self._work(name, resumed), name=f"node-{name}")

    async def _work(self, name: str, resumed: bool) -> None:
        try:
            await self._drive(name, resumed)
        except asyncio.CancelledError:
            raise
        except FencedError:
            return  # this replica lost the Lease: the next leader resumes the node
        except (KubeApiError, ConflictError) as error:  # a status write failed: expected
            log.warning(
                "%s: %s: %s; resuming shortly",
                self.name,
                name,
                error,
                extra={"plan": self.name, "node": name},
            )
            await asyncio.sleep(_WORKER_RETRY_S)
            with contextlib.suppress(Exception):
                await self.store.load()
        except Exception:
            # The node keeps its slot; the next step resumes it as after a restart.
            log.exception("%s: the worker for %s failed; resuming it shortly", self.name, name)
            await asyncio.sleep(_WORKER_RETRY_S)
            with contextlib.suppress(Exception):
                await self.store.load()  # a failed write may have been stored after all
        finally:
            self._node_moved.pop(name, None)
            self.wake.set()

    async def _drive(self, name: str, resumed: bool) -> None:
        if resumed:
            progress = self._progress(name)
            if progress is not None:
                taken_up = sm.resume(progress, self.deps.clock())
                if taken_up != progress and await self._transition(progress, taken_up):
                    await self._announce(progress, taken_up)
        view_is_recent = True  # False once a wait for the Node's change timed out
        waited: sm.Action | None = None  # what the last wait for the Node was for
        wait_s = _NODE_WAIT_S
        just_rebooted = False  # this worker asked for the reboot the node is in
        booted: str | None = None  # the boot ID the last action (the reboot's wait) just read
        while not self._stopping:
            spec = self._worker_spec()
            progress = self._progress(name)
            if progress is None:
                await self.store.commit(lambda d: _release(d, name), nodes=(name,))
                return
            policy = self._policy(spec)
            ctx = sm.Context(policy)
            now = self.deps.clock()
            action = sm.next_action(progress, ctx, now)
            if action.kind == "None":
                if await self._hand_back(name, progress):
                    return
                continue  # the record had moved on (a write whose reply was lost): re-read
            moved = self._node_moved.setdefault(name, asyncio.Event())
            moved.clear()  # a change from here on wakes a check that waits for the Node
            view = self.nodes().get(name)
            if waited != action:
                wait_s = _NODE_WAIT_S
            if action.kind == "AwaitReboot" and just_rebooted and not _back_already(view, progress):
                # asked to reboot a moment ago: it is going down, not back yet
                just_rebooted = False
                view_is_recent = await self._node_change(name, moved, view, wait_s, back=True)
                wait_s = min(_REBOOT_WAIT_S, 2 * wait_s)
                waited = action
                continue
            ride = self._ride(progress, action, ctx)
            ahead = self._read_ahead.pop(name, None)  # for the first cordon only
            if ahead is not None and (action.kind != "Cordon" or view is None):
                ahead.cancel()
                ahead = None
            if view is None:
                result = sm.Result(transient=True, message="the Node object does not exist")
            else:
                node_ctx = NodeContext(
                    plan=self.name,
                    spec=spec,
                    node=view,
                    target=self.routing.target(view),
                    kube=self.deps.kube,
                    osapi=self.osapi,
                    own_pod=self.deps.own_pod,
                    cordon_blocked=functools.partial(self._cordon_blocked, progress),
                    is_plan=lambda holder: any(p.name == holder for p in self.plans()),
                    view_is_recent=view_is_recent,
                    ride=ride,
                    view=functools.partial(lambda n: self.nodes().get(n), name),
                    clock=self.deps.clock,
                    boot_id_now=booted if action.kind == "Verify" else None,
                    read_ahead=ahead,
                )
                result = await perform(action, progress, node_ctx)
            booted = result.boot_id if action.kind == "AwaitReboot" and result.ok else None
            on_node = ride is not None and ride.written and result == ride.result
            if on_node and ride is not None and ride.record is not None:
                updated = ride.record  # on the Node already, with the cordon or uncordon
            else:
                updated = sm.after(progress, action, result, ctx, self.deps.clock())
            if action.kind == "Cordon" and result.ok and self._freed_at:
                metrics.TRANSITION_SECONDS.observe(time.monotonic() - self._freed_at.pop(0))
            if updated == progress:
                if action.kind == "AwaitReboot":
                    view_is_recent = await self._node_change(name, moved, view, wait_s, back=True)
                    wait_s = min(_REBOOT_WAIT_S, 2 * wait_s)
                    waited = action
                elif result.awaits_node:
                    view_is_recent = await self._node_change(
                        name, moved, view, _NODE_WAIT_S, back=False
                    )
                    waited = action
                else:
                    await asyncio.sleep(self.deps.poll_s)
                continue
            just_rebooted = (
                updated.reboot_requested_at is not None and progress.reboot_requested_at is None
            )
            if not await self._transition(progress, updated, on_node=on_node):
                continue
            if updated.phase != progress.phase:
                if updated.phase in ("Failed", "RolledBack"):
                    reason = updated.reason or "Unknown"
                    metrics.series(metrics.NODE_FAILURES, self.owner, self.name, reason).inc()
                if updated.phase in _FREES_SLOT:
                    # off the handover's path; the plan is not Completed before it is posted
                    self._announce_soon([(progress, updated)])
                else:
                    await self._announce(progress, updated)

    async def _hand_back(self, name: str, progress: NodeProgress) -> bool:
        """Gives the finished node's slot back; False when its record moved on meanwhile.

        The next step gives it back in the write that claims the slot for the next node, so a
        handover costs one status write, not two; should no step do so within _HANDOVER_S
        (a step failing, a spec that does not parse), the worker writes the release itself.
        """
        finishing = self._finishing[name] = _Finishing(progress, time.monotonic())
        self.wake.set()
        if not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finishing.settled.wait(), _HANDOVER_S)
        if self._finishing.get(name) is finishing:
            del self._finishing[name]
        if name not in self.store.summary.in_flight:
            return True
        release = functools.partial(_release, name=name, expected=progress)
        await self.store.commit(release, nodes=(name,))
        if name in self.store.summary.in_flight:
            return False
        self._count_freed(finishing)
        return True

    def _count_freed(self, finishing: _Finishing) -> None:
        """Notes when the slot was freed, once, for the transition latency (at the cordon)."""
        if finishing.record.phase in _FREES_SLOT and not finishing.counted:
            finishing.counted = True
            bisect.insort(self._freed_at, finishing.since)

    def _settle(self, handing_back: Mapping[str, _Finishing]) -> None:
        """After the step's write: tells each finished worker whether its slot was given back."""
        for name, finishing in handing_back.items():
            if name not in self.store.summary.in_flight:
                self._count_freed(finishing)
            finishing.settled.set()

    def _read_ahead_of_cordon(self, nodes: Sequence[NodeView]) -> None:
        """Starts reading what the cordon records (boot ID, version) while the slot is claimed."""
        for node in nodes:
            self._drop_read_ahead(node.name)
            task = asyncio.create_task(
                read_before_cordon(self.osapi, self.routing.target(node)),
                name=f"read-ahead-{node.name}",
            )
            task.add_done_callback(_retrieved)
            self._read_ahead[node.name] = task

    def _drop_read_ahead(self, name: str) -> None:
        task = self._read_ahead.pop(name, None)
        if task is not None:
            task.cancel()

    def _policy(self, spec: UpgradePlanSpec) -> RolloutPolicy:
        """The spec's rollout policy, made again only when the spec changed."""
        made = self._policy_made
        if made is None or made[0] is not spec:
            made = self._policy_made = (spec, _policy(spec))
        return made[1]

    async def _node_change(
        self, name: str, moved: asyncio.Event, seen: NodeView | None, wait_s: float, *, back: bool
    ) -> bool:
        """Waits (at most ``wait_s``) until the watch shows the node's health changed.

        ``back``: for a rebooting node, where only a Ready Node may be back. True when the
        watch spoke of the node meanwhile (whether or not its health changed); False when it
        did not, so the view may be stale.
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + max(self.deps.poll_s, wait_s)
        heard = False  # an event of the node's came, if not the one waited for
        while (left := until - loop.time()) > 0:
            try:
                await asyncio.wait_for(moved.wait(), left)
            except TimeoutError:
                return heard
            moved.clear()
            heard = True
            now = self.nodes().get(name)
            if now is None or seen is None:
                return True
            if _health(now) != _health(seen) and (now.ready or not back):
                return True
        return heard

    def _ride(
        self, progress: NodeProgress, action: sm.Action, ctx: sm.Context
    ) -> RecordRide | None:
        """For a cordon, and the uncordon at the end: the record that goes with the write."""
        if action.kind != "Cordon" and not (
            action.kind == "Uncordon" and progress.phase == "Uncordoning"
        ):
            return None
        return RecordRide(
            expect=lambda result: sm.after(progress, action, result, ctx, self.deps.clock()),
            annotation=self.store.annotation,
            hold=functools.partial(self.store.riding, progress.name),
        )

    def _cordon_blocked(self, progress: NodeProgress) -> str | None:
        """Why the plan's rules no longer allow cordoning the node (checked just before).

        Judged by the spec as it is now: the cordon's reads may have taken long, and a spec
        edited meanwhile (a new target) may send the control planes first again.
        """
        if progress.cordoned_by_us is not None:
            return None  # cordoned already in this attempt (or its reply was lost)
        spec = self._worker_spec()
        view = self.nodes().get(progress.name)
        for other in self.plans():
            if other.name != self.name and (
                progress.name in other.in_flight
                or (view is not None and view.cordoned_by == other.name)
            ):
                return f"UpgradePlan {other.name} holds the node"
        in_flight = [n for n in self.store.summary.in_flight if n != progress.name]
        return planner.still_fits(
            spec,
            progress.name,
            in_flight,
            self._selection(spec),
            _CurrentRecords(self, spec.target.version),
        )

    async def _transition(
        self, before: NodeProgress, after: NodeProgress, *, on_node: bool = False
    ) -> bool:
        """Stores ``after`` if the record is still ``before``; False when it had moved on.

        A write whose reply was lost leaves this copy behind the stored one; a transition
        computed from the older record must not overwrite the newer (it would, e.g., forget
        that the cordon is ours). The worker then re-reads and goes on from the stored record.
        A change that a restart may lose without harm is staged, not waited for; one whose
        record the cordon or uncordon carried is taken at once (``StatusStore.take_on_node``).
        """
        change = functools.partial(_record, before=before, after=after)
        if on_node and self.store.take_on_node(before.name, change, after):
            return True  # on the Node already: nothing to wait for
        if sm.deferrable(before, after):
            self.store.stage(change, after)
            return True
        await self.store.commit(change, nodes=(before.name,), on_node=after if on_node else None)
        return self._progress(before.name) == after

    def _progress(self, name: str) -> NodeProgress | None:
        staged = self.store.staged(name)
        if staged is not None:
            return staged
        return self.store.records.get(name)

    async def _announce(self, before: NodeProgress, after: NodeProgress) -> None:
        node = self.nodes().get(after.name)
        node_uid = node.uid if node is not None else ""
        await announce(
            self.deps.kube, self.name, self.uid, node_uid, before, after, self._plan_may_post
        )
        if after.phase == "Done" and before.started_at is not None:
            seconds = (self.deps.clock() - before.started_at).total_seconds()
            self._durations.append(seconds)
            metrics.series(metrics.NODE_UPGRADE_SECONDS, self.owner, self.name).observe(seconds)
        if before.phase == "Draining" and before.since is not None:
            drained = (self.deps.clock() - before.since).total_seconds()
            metrics.series(metrics.DRAIN_SECONDS, self.owner, self.name).observe(drained)

    def _announce_soon(self, changes: list[tuple[NodeProgress, NodeProgress]]) -> None:
        """Announces these changes from a task of their own, in order (see ``_announce``)."""
        if not changes:
            return

        async def post() -> None:
            for before, after in changes:
                try:
                    await self._announce(before, after)
                except Exception:  # an Event is not worth a node: log it and go on
                    log.exception("%s: could not announce %s", self.name, after.name)

        task = asyncio.create_task(post(), name=f"announce-{self.name}")
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    def _plan_may_post(self, warning: bool) -> bool:
        """Warnings always; routine node Events while the plan's budget lasts (core.events)."""
        if warning or self._event_budget.spend(time.monotonic()):
            return True
        metrics.series(metrics.EVENTS_SUPPRESSED, self.owner, self.name).inc()
        return False

    # -- plan-level policy -----------------------------------------------------------------------

    def node_moved(self, name: str) -> None:
        """The node's view changed: a check of this node that waits for that runs again."""
        self._moved.add(name)
        moved = self._node_moved.get(name)
        if moved is not None:
            moved.set()

    def cares_about(self, before: NodeView | None, after: NodeView | None) -> bool:
        """Whether a node's change (None: absent) can change what this plan does.

        The planner's ``moves_plan``; the node's own worker hears of it through ``node_moved``.
        """
        snap = self.reader.last_good
        selector = snap.spec.node_selector.to_api() if snap is not None else None
        return planner.moves_plan(before, after, self.store.summary.in_flight, selector)

    def _selection(self, spec: UpgradePlanSpec) -> planner.Selection:
        """The selected nodes, carried over with only the nodes that moved looked at again.

        Made afresh when the selector changed. (The shell's view of the nodes is one dict kept
        current in place, whose changes are named by ``node_moved``; a dict made anew, as tests
        do, is made afresh. Walking every node at every step was 6 % of the operator's CPU in a
        1,000-node rollout.)
        """
        nodes = self.nodes()
        selector = spec.node_selector.to_api()
        cached = self._selection_cache
        if cached is None or cached[0] is not nodes or cached[1] != selector:
            selection = planner.Selection.of(self._selected(spec))
        elif self._moved:
            selection = cached[2].updated(nodes, self._moved, selector)
        else:
            return cached[2]
        self._moved = set()
        self._selection_cache = (nodes, selector, selection)
        return selection

    def _selected(self, spec: UpgradePlanSpec) -> dict[str, NodeView]:
        selector = spec.node_selector.to_api()
        return {name: node for name, node in self.nodes().items() if matches(selector, node.labels)}

    def _sleep_for(self, now: datetime.datetime) -> float:
        upcoming = [
            (record.retry_at - now).total_seconds()
            for record in self.store.records.values()
            if record.retry_at is not None and record.retry_at > now
        ]
        return max(0.05, min([_IDLE_WAKE_S, *upcoming]))


class _CurrentRecords(Mapping[str, NodeProgress]):
    """The records of the plan's current target, looked up one by one (no copy of them all)."""

    def __init__(self, rollout: PlanRollout, target: str | None) -> None:
        self.rollout = rollout
        self.target = target

    def __getitem__(self, name: str) -> NodeProgress:
        record = self.rollout._progress(name)
        in_flight = self.rollout.store.summary.in_flight
        if record is None or not planner.current(record, self.target, in_flight):
            raise KeyError(name)
        return record

    def __iter__(self) -> Iterator[str]:
        return (name for name in list(self.rollout.store.records) if name in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _records(
    records: Mapping[str, NodeProgress], in_flight: Sequence[str], spec: UpgradePlanSpec
) -> dict[str, NodeProgress]:
    """The records of the plan's current target."""
    target = spec.target.version
    flying = frozenset(in_flight)
    return {name: r for name, r in records.items() if planner.current(r, target, flying)}


@dataclass
class _Finishing:
    """A worker whose node is done, waiting for the step to give its slot back."""

    record: NodeProgress
    since: float  # time.monotonic() when the worker found nothing left to do
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    # its freeing is in ``_freed_at``: the step and the worker may both have given it back
    counted: bool = False


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Marks a read-ahead's error as seen: the cordon reads again, or nobody needed it."""
    if not task.cancelled():
        task.exception()


def _back_already(view: NodeView | None, progress: NodeProgress) -> bool:
    """The watched Node is Ready on a boot other than the one the reboot was asked of."""
    return (
        view is not None
        and view.ready
        and bool(view.boot_id)
        and bool(progress.boot_id)
        and view.boot_id != progress.boot_id
    )


def _health(view: NodeView) -> tuple[bool, str, str]:
    """What a check waiting for the Node looks at: Ready, its boot, its OS."""
    return view.ready, view.boot_id, view.os_image


def _policy(spec: UpgradePlanSpec) -> RolloutPolicy:
    return RolloutPolicy.model_validate(spec.model_dump(include=set(RolloutPolicy.model_fields)))


def _record(draft: Draft, before: NodeProgress, after: NodeProgress) -> None:
    if draft.nodes.get(before.name) == before:
        draft.nodes[after.name] = after


def _put(draft: Draft, record: NodeProgress) -> None:
    draft.nodes[record.name] = record


def _release(draft: Draft, name: str, expected: NodeProgress | None = None) -> None:
    if expected is not None and draft.nodes.get(name) != expected:
        return
    if name in draft.in_flight:
        draft.in_flight.remove(name)


def _waiting(decision: planner.Decision, waiting: planner.Waiting) -> planner.Decision:
    return dataclasses.replace(decision, start=(), waiting=waiting)
