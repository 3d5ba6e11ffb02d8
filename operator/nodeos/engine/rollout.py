"""Runs one UpgradePlan: plans each step, claims slots, and drives a worker per in-flight node.

The loop wakes on node events, on worker progress and on deadlines. Every step it asks the
planner what may start; it records each new node's slot in the plan status (a guarded write)
*before* a worker touches the node; it resumes workers for nodes that were in flight when the
operator last stopped; and it writes the plan's summary (phase, counts, conditions, preview,
ETA). Workers feed each action's result to the state machine and persist every phase change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeos.core import planner
from nodeos.core import statemachine as sm
from nodeos.core.nodes import NodeView, matches
from nodeos.engine import metrics
from nodeos.engine.actions import NodeContext, perform
from nodeos.engine.etcd import etcd_problem
from nodeos.engine.routing import Routing
from nodeos.engine.status import Draft, StatusStore
from nodeos.models.common import Condition, parse_duration
from nodeos.models.nodeapi import OsApiAccess
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec
from nodeos.ports.kube import KubeApi
from nodeos.ports.osapi import OsApi

RETRY_ANNOTATION = "nodeos.dev/retry"
_WORKER_RETRY_S = 2.0
log = logging.getLogger(__name__)
_IDLE_WAKE_S = 5.0
_RELEASING = frozenset({*planner.TERMINAL, "Pending"})


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
        self.wake = asyncio.Event()
        self.workers: dict[str, asyncio.Task[None]] = {}
        self._freed_at: float | None = None
        self._durations: list[float] = []
        self.osapi: OsApi = deps.osapi
        self.routing: Routing = deps.routing
        self._access: OsApiAccess | None = None

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Reconciles until ``stopped()``; in-flight workers are cancelled, not abandoned."""
        await self.store.load()
        try:
            for name in list(self.store.status.in_flight):
                self._spawn(name, resumed=True)
            while not stopped():
                self.wake.clear()
                timeout = await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)
        finally:
            for task in self.workers.values():
                task.cancel()
            await asyncio.gather(*self.workers.values(), return_exceptions=True)

    async def step(self) -> float:
        """One reconciliation; returns how long to sleep unless woken earlier."""
        body = self.body()
        spec = UpgradePlanSpec.model_validate(body["spec"])
        now = self.deps.clock()
        await self._use_access(spec)
        await self._handle_spec_change(spec, body)
        selected = self._selected(spec)
        status = self.store.status
        progress = {record.name: record for record in status.nodes}
        decision = planner.plan_step(
            spec,
            progress,
            status.in_flight,
            list(selected.values()),
            now,
            operator_node=self.deps.operator_node,
            canary_released=await self._canary_released(spec, selected, progress, now),
            behind=planner.queued_behind(
                planner.PlanRef(
                    self.name,
                    str(body["metadata"].get("creationTimestamp", "")),
                    status.phase,
                    spec.node_selector.to_api(),
                ),
                self.plans(),
                list(self.nodes().values()),
            ),
        )
        start = list(decision.start)
        if start and any(selected[name].control_plane for name in start):
            problem = await etcd_problem(
                self.osapi,
                [n for n in selected.values() if n.control_plane],
                self.routing.target,
            )
            if problem is not None:
                start = []
                decision = _waiting(decision, "EtcdUnhealthy", problem)
        if start:
            await self.store.commit(lambda d: self._claim(d, start, now))
            for name in start:
                self._spawn(name, resumed=False)
        for name in self.store.status.in_flight:
            self._spawn(name, resumed=True)  # only where no worker runs (one failed)
        await self.store.commit(lambda d: self._summarise(d, spec, body, decision, now))
        self._export_metrics()
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

    def _claim(self, draft: Draft, names: list[str], now: datetime.datetime) -> None:
        for name in names:
            if name not in draft.in_flight:
                draft.in_flight.append(name)
            draft.nodes[name] = sm.start(name, draft.nodes.get(name), now)
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
        except Exception:
            # The node keeps its slot; the next step resumes it as after a restart.
            log.exception("%s: the worker for %s failed; resuming it shortly", self.name, name)
            await asyncio.sleep(_WORKER_RETRY_S)
        finally:
            self.wake.set()

    async def _drive(self, name: str, resumed: bool) -> None:
        while True:
            body = self.body()
            spec = UpgradePlanSpec.model_validate(body["spec"])
            progress = next((n for n in self.store.status.nodes if n.name == name), None)
            view = self.nodes().get(name)
            if progress is None or view is None:
                await self.store.commit(lambda d: _release(d, name))
                return
            ctx = sm.Context(spec.target.version, _policy(spec), is_resume=resumed)
            action = sm.next_action(progress, ctx, self.deps.clock())
            if action.kind == "None":
                await self.store.commit(lambda d: _release(d, name))
                return
            node_ctx = NodeContext(
                plan=self.name,
                spec=spec,
                node=view,
                target=self.routing.target(view),
                kube=self.deps.kube,
                osapi=self.osapi,
                own_pod=self.deps.own_pod,
            )
            result = await perform(action, progress, node_ctx)
            resumed = False
            updated = sm.after(progress, action, result, ctx, self.deps.clock())
            if action.kind == "Cordon" and result.ok and self._freed_at is not None:
                metrics.TRANSITION_SECONDS.observe(time.monotonic() - self._freed_at)
                self._freed_at = None
            if updated.phase == "Failed" and updated.reason != "RollingBack":
                await self._after_failure(spec, updated)
            if updated != progress:
                await self.store.commit(functools.partial(_record, updated=updated))
                if updated.phase != progress.phase:
                    await self._announce(progress, updated)
                if updated.phase in _RELEASING:
                    self._freed_at = time.monotonic()
                    return
                continue
            await asyncio.sleep(self.deps.poll_s)

    async def _after_failure(self, spec: UpgradePlanSpec, failed: NodeProgress) -> None:
        metrics.NODE_FAILURES.labels(self.name, failed.reason or "Unknown").inc()
        if spec.failure_policy.uncordon_on_failure and failed.cordoned_by_us:
            await self.deps.kube.uncordon(failed.name, self.name)

    async def _announce(self, before: NodeProgress, after: NodeProgress) -> None:
        text = f"{after.name}: {before.phase} -> {after.phase}"
        if after.message:
            text += f" ({after.message})"
        warning = after.phase in ("Failed", "RolledBack") or (
            after.phase == "Pending" and after.reason is not None
        )
        reason = f"Node{after.phase}" if not after.reason else f"Node{after.phase}{after.reason}"
        await self.deps.kube.event(
            "UpgradePlan", self.name, self.uid, "nodeos.dev/v1alpha1", reason[:128], text, warning
        )
        node = self.nodes().get(after.name)
        node_uid = node.uid if node is not None else ""
        await self.deps.kube.event("Node", after.name, node_uid, "v1", reason[:128], text, warning)
        if after.phase == "Done" and before.started_at is not None:
            seconds = (self.deps.clock() - before.started_at).total_seconds()
            self._durations.append(seconds)
            metrics.NODE_UPGRADE_SECONDS.labels(self.name).observe(seconds)
        if before.phase == "Draining" and before.since is not None:
            drained = (self.deps.clock() - before.since).total_seconds()
            metrics.DRAIN_SECONDS.labels(self.name).observe(drained)

    # -- plan-level policy -----------------------------------------------------------------------

    def _selected(self, spec: UpgradePlanSpec) -> dict[str, NodeView]:
        selector = spec.node_selector.to_api()
        return {name: node for name, node in self.nodes().items() if matches(selector, node.labels)}

    async def _handle_spec_change(self, spec: UpgradePlanSpec, body: Mapping[str, Any]) -> None:
        generation = int(body["metadata"].get("generation", 0))
        annotations = body["metadata"].get("annotations") or {}
        status = self.store.status
        retry = RETRY_ANNOTATION in annotations
        changed = status.observed_generation is not None and generation > status.observed_generation
        retarget = status.observed_target not in (None, spec.target.version)
        if not (retry or changed):
            return

        def reset(draft: Draft) -> None:
            for name, record in list(draft.nodes.items()):
                if name in draft.in_flight:
                    continue
                if retarget or record.phase in planner.FAILED or record.phase == "Pending":
                    del draft.nodes[name]

        await self.store.commit(reset)
        if retry:
            await self.deps.kube.remove_plan_annotation(self.name, RETRY_ANNOTATION)

    async def _canary_released(
        self,
        spec: UpgradePlanSpec,
        selected: Mapping[str, NodeView],
        progress: Mapping[str, NodeProgress],
        now: datetime.datetime,
    ) -> bool:
        canary = spec.strategy.canary
        if not canary.count:
            return True
        names = planner.canary_nodes(spec, list(selected.values()), self.deps.operator_node)
        records = [progress.get(n) for n in names]
        if not all(r is not None and r.phase in planner.TERMINAL for r in records):
            return True  # the planner itself holds back everything past the canary batch
        if _has_condition(self.store.status.conditions, "CanaryComplete"):
            return True
        finished = max((r.since for r in records if r is not None and r.since), default=now)
        if canary.pause_after:
            await self.deps.kube.patch_plan_spec(self.name, {"paused": True})
            await self.store.commit(
                lambda d: _set_condition(
                    d,
                    "CanaryComplete",
                    "True",
                    "CanaryPaused",
                    "canary batch done; unpause the plan to continue",
                    now,
                )
            )
            return False
        if canary.soak and now < finished + parse_duration(canary.soak):
            return False
        await self.store.commit(
            lambda d: _set_condition(
                d, "CanaryComplete", "True", "CanarySoaked", "canary batch done and soaked", now
            )
        )
        return True

    def _summarise(
        self,
        draft: Draft,
        spec: UpgradePlanSpec,
        body: Mapping[str, Any],
        decision: planner.Decision,
        now: datetime.datetime,
    ) -> None:
        for name in decision.up_to_date:
            draft.nodes.setdefault(
                name,
                NodeProgress(name=name, phase="Done", since=now, reason="AlreadyUpToDate"),
            )
        counts = dict(decision.counts)
        failed = counts["failed"]
        flying = len(draft.in_flight)
        if decision.complete:
            phase = "Completed"
            message = f"{counts['updated']} of {counts['total']} node(s) on {spec.target.version}"
            if failed:
                message += f"; {failed} failed"
        elif decision.failed_budget_exhausted and not flying:
            phase = "Failed"
            message = (decision.waiting.message if decision.waiting else "failure budget spent") + (
                f"; fix the cause, then annotate {RETRY_ANNOTATION}=true or change the spec"
            )
        elif flying or decision.start:
            phase = "Progressing"
            message = f"in flight: {', '.join(draft.in_flight)}"
            if decision.waiting:
                message += f"; {decision.waiting.message}"
        elif decision.waiting is not None:
            phase = {"Paused": "Paused", "Queued": "Queued"}.get(decision.waiting.reason, "Waiting")
            message = decision.waiting.message
        else:
            phase = "Pending"
            message = "nothing to do yet"
        summary = draft.summary
        summary.update(
            phase=phase,
            message=message[:1024],
            observed_generation=int(body["metadata"].get("generation", 0)),
            observed_target=spec.target.version,
            progress=f"{counts['updated']}/{counts['total']}",
            counts={
                "total": counts["total"],
                "updated": counts["updated"],
                "in_progress": counts["inProgress"],
                "failed": counts["failed"],
                "pending": counts["pending"],
                "skipped": counts["skipped"],
            },
            preview={
                "batches": [list(b) for b in decision.batches],
                "total_batches": decision.total_batches,
            },
            next_window=decision.next_window,
            eta=self._eta(decision, now) if phase == "Progressing" else None,
        )
        if phase == "Completed":
            summary.setdefault("completed_at", now)
        else:
            summary.pop("completed_at", None)
        waiting = decision.waiting
        _set_condition(
            draft, "Progressing", "True" if phase == "Progressing" else "False", phase, message, now
        )
        _set_condition(
            draft, "Complete", "True" if phase == "Completed" else "False", phase, message, now
        )
        _set_condition(
            draft,
            "Degraded",
            "True" if failed else "False",
            "NodesFailed" if failed else "NoFailures",
            f"{failed} node(s) failed" if failed else "no node failed",
            now,
        )
        _set_condition(
            draft,
            "Waiting",
            "True" if waiting else "False",
            waiting.reason if waiting else "NotWaiting",
            waiting.message if waiting else "",
            now,
        )

    def _eta(self, decision: planner.Decision, now: datetime.datetime) -> datetime.datetime | None:
        if not self._durations:
            return None
        average = sum(self._durations) / len(self._durations)
        eta = now + datetime.timedelta(seconds=average * (decision.total_batches + 1))
        return eta.replace(second=0, microsecond=0)

    def _sleep_for(self, now: datetime.datetime) -> float:
        upcoming = [
            (record.retry_at - now).total_seconds()
            for record in self.store.status.nodes
            if record.retry_at is not None and record.retry_at > now
        ]
        return max(0.05, min([_IDLE_WAKE_S, *upcoming]))

    def _export_metrics(self) -> None:
        status = self.store.status
        for phase in (
            "Pending",
            "Queued",
            "Progressing",
            "Paused",
            "Waiting",
            "Completed",
            "Failed",
        ):
            metrics.PLAN_PHASE.labels(self.name, phase).set(1 if status.phase == phase else 0)
        by_phase: dict[str, int] = {}
        for record in status.nodes:
            by_phase[record.phase] = by_phase.get(record.phase, 0) + 1
        for phase, count in by_phase.items():
            metrics.NODES_BY_PHASE.labels(self.name, phase).set(count)


def _policy(spec: UpgradePlanSpec) -> RolloutPolicy:
    return RolloutPolicy.model_validate(spec.model_dump(include=set(RolloutPolicy.model_fields)))


def _record(draft: Draft, updated: NodeProgress) -> None:
    draft.nodes[updated.name] = updated
    if updated.phase in _RELEASING and updated.name in draft.in_flight:
        draft.in_flight.remove(updated.name)


def _release(draft: Draft, name: str) -> None:
    if name in draft.in_flight:
        draft.in_flight.remove(name)


def _has_condition(conditions: list[Condition], kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions)


def _set_condition(
    draft: Draft, kind: str, status: str, reason: str, message: str, now: datetime.datetime
) -> None:
    conditions = [Condition.model_validate(c) for c in draft.summary.get("conditions", [])]
    generation = draft.summary.get("observed_generation")
    current = next((c for c in conditions if c.type == kind), None)
    changed = current is None or current.status != status
    updated = Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=now if changed or current is None else current.last_transition_time,
        observed_generation=generation,
    )
    merged = [updated if c.type == kind else c for c in conditions]
    if current is None:
        merged.append(updated)
    draft.summary["conditions"] = [c.model_dump() for c in merged]


def _waiting(decision: planner.Decision, reason: str, message: str) -> planner.Decision:
    return dataclasses.replace(decision, start=(), waiting=planner.Waiting(reason, message))
