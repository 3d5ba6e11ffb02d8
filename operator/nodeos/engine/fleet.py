"""Runs one NodeOSConfig: inventory, drift, live configuration, and rollouts through a plan.

Every refresh (node events, or ``inventory.refreshInterval``) it reads each selected node's OS
version and machine configuration through the OS API (bounded concurrency, per-call deadlines),
publishes them on the Node (label ``nodeos.dev/os-version``, ``nodeos.dev/os-api-reachable``,
annotations with the config hash and drift), in the status and as metrics, then acts:

- configuration changes that need no reboot are applied node by node (dry run first) without
  cordoning anyone; a node that rejects its configuration stops that and is reported;
- version changes, and configuration changes that need a reboot, are rolled out by an
  UpgradePlan this NodeOSConfig owns (``<name>-rollout``), so the same engine and safety rules
  apply. The plan is removed once nothing drifts any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nodeos.core.machineconfig import PatchError, apply_patches, config_hash, drifted
from nodeos.core.nodes import (
    CONFIG_DRIFTED_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    OS_VERSION_LABEL,
    REACHABLE_LABEL,
    NodeView,
    matches,
)
from nodeos.core.rollouts import rollout_action
from nodeos.core.summary import set_condition
from nodeos.engine import metrics
from nodeos.engine.rollout import EngineDeps
from nodeos.engine.routing import Routing
from nodeos.models.common import Condition, parse_duration
from nodeos.models.nodeapi import OsApiAccess
from nodeos.models.nodeosconfig import NodeOSConfigSpec
from nodeos.ports.kube import KubeApi, KubeApiError, NotFoundError
from nodeos.ports.osapi import CONFIG_PATH, ApplyMode, OsApi, OsApiError

_MIN_GAP_S = 2.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeState:
    """One node as the inventory found it."""

    name: str
    reachable: bool
    version: str = ""
    config: bytes = b""
    error: str = ""

    def config_drifted(self, patches: list[str]) -> bool:
        """Whether the patches would change this node's configuration."""
        return bool(patches) and drifted(self.config, patches)


class ConfigController:
    """The engine for one NodeOSConfig, alive as long as its kopf daemon."""

    def __init__(
        self,
        name: str,
        uid: str,
        deps: EngineDeps,
        nodes: Callable[[], Mapping[str, NodeView]],
        body: Callable[[], Mapping[str, Any]],
    ) -> None:
        self.name = name
        self.uid = uid
        self.deps = deps
        self.nodes = nodes
        self.body = body
        self.wake = asyncio.Event()
        self.plan_name = f"{name}-rollout"
        self._access: OsApiAccess | None = None
        self._osapi: OsApi | None = None
        self._routing: Routing | None = None
        self._published: dict[str, tuple[str, ...]] = {}

    def cares_about(self, before: NodeView | None, after: NodeView | None) -> bool:
        """Whether a node's change calls for a refresh.

        It does when a selected node joined, left, or changed what the inventory reads; not
        for the labels and annotations this controller writes itself.
        """
        # the selector as the API stores it: no model validation on this path (node events)
        selector = (self.body().get("spec") or {}).get("nodeSelector")
        if not isinstance(selector, Mapping):
            return True
        if not any(matches(selector, view.labels) for view in (before, after) if view):
            return False
        return before is None or after is None or _inventoried(before) != _inventoried(after)

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Refreshes until stopped; node events bring a refresh forward, at most every 2 s."""
        last_error = ""
        while not stopped():
            self.wake.clear()
            try:
                interval = await self.step()
                last_error = ""
            except Exception as error:  # any API, any bad input: say so once, retry later
                text = f"{type(error).__name__}: {error}"[:1024]
                if text != last_error:
                    log.warning(
                        "refresh failed, retrying in 30 s: %s", text, extra={"config": self.name}
                    )
                    last_error = text
                interval = 30.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval)
            if not stopped():
                await asyncio.sleep(_MIN_GAP_S)

    async def step(self) -> float:
        """One inventory and reconciliation; returns the seconds until the next refresh."""
        spec = NodeOSConfigSpec.model_validate(self.body()["spec"])
        interval = parse_duration(spec.inventory.refresh_interval).total_seconds()
        try:
            osapi, routing = await self._client(spec.os_api)
        except (OsApiError, KubeApiError, NotFoundError, KeyError, ValueError) as error:
            await self._report_access_problem(str(error))
            return min(interval, 30.0)
        selected = {
            n: v for n, v in self.nodes().items() if matches(spec.node_selector.to_api(), v.labels)
        }
        states = await self._inventory(spec, selected, osapi, routing)
        patches = spec.config.patches if spec.config else []
        await self._publish(states, patches)
        problems: list[str] = []
        reboot_needed: list[str] = []
        if not spec.paused and patches:
            reboot_needed, problems = await self._apply_live(spec, states, selected, osapi, routing)
        versions_behind = [
            s.name
            for s in states
            if s.reachable and spec.os is not None and s.version != spec.os.version
        ]
        plan_phase = await self._reconcile_plan(spec, versions_behind, reboot_needed)
        await self._write_status(spec, states, patches, plan_phase, problems)
        return interval

    # -- OS API access -----------------------------------------------------------------------

    async def _client(self, access: OsApiAccess) -> tuple[OsApi, Routing]:
        if access != self._access or self._osapi is None or self._routing is None:
            if self.deps.osapi_for is None:
                raise ValueError("no OS API factory configured")
            self._osapi, self._routing = await self.deps.osapi_for(access)
            self._access = access
        return self._osapi, self._routing

    async def _report_access_problem(self, message: str) -> None:
        await self.deps.kube.patch_config_status(
            self.name,
            {
                "message": f"cannot use the OS API credentials: {message}"[:1024],
                "conditions": self._conditions(("Ready", False, "CredentialsUnusable", message)),
            },
        )

    # -- inventory ---------------------------------------------------------------------------

    async def _inventory(
        self,
        spec: NodeOSConfigSpec,
        selected: Mapping[str, NodeView],
        osapi: OsApi,
        routing: Routing,
    ) -> list[NodeState]:
        gate = asyncio.Semaphore(spec.inventory.concurrency)

        async def read(view: NodeView) -> NodeState:
            async with gate:
                target = routing.target(view)
                try:
                    version = (await osapi.version(target)).tag
                    config = await osapi.read_file(target, CONFIG_PATH)
                except OsApiError as error:
                    return NodeState(view.name, reachable=False, error=error.detail)
                return NodeState(view.name, reachable=True, version=version, config=config)

        return list(await asyncio.gather(*(read(view) for view in selected.values())))

    async def _publish(self, states: list[NodeState], patches: list[str]) -> None:
        for state in states:
            labels: dict[str, str | None] = {
                REACHABLE_LABEL: "true" if state.reachable else "false"
            }
            annotations: dict[str, str | None] = {}
            if state.reachable:
                labels[OS_VERSION_LABEL] = state.version
                annotations[CONFIG_HASH_ANNOTATION] = config_hash(state.config)
                if patches:
                    annotations[CONFIG_DRIFTED_ANNOTATION] = (
                        "true" if state.config_drifted(patches) else "false"
                    )
            key = (
                *sorted(f"{k}={v}" for k, v in labels.items()),
                *sorted(f"{k}={v}" for k, v in annotations.items()),
            )
            if self._published.get(state.name) != key:
                await self.deps.kube.label_node(state.name, labels, annotations)
                self._published[state.name] = key

    # -- configuration ---------------------------------------------------------------------------

    async def _apply_live(
        self,
        spec: NodeOSConfigSpec,
        states: list[NodeState],
        selected: Mapping[str, NodeView],
        osapi: OsApi,
        routing: Routing,
    ) -> tuple[list[str], list[str]]:
        """Applies no-reboot changes one node at a time; returns (need a reboot, problems)."""
        assert spec.config is not None
        mode = spec.config.mode
        patches = spec.config.patches
        reboot_needed: list[str] = []
        for state in states:
            if not state.reachable or not state.config_drifted(patches):
                continue
            if mode in ("Reboot", "Staged"):
                reboot_needed.append(state.name)
                continue
            target = routing.target(selected[state.name])
            try:
                patched = apply_patches(state.config, patches)
            except PatchError as error:
                return reboot_needed, [str(error)]
            try:
                await osapi.apply_configuration(target, patched, "NoReboot", dry_run=True)
            except OsApiError as error:
                # Talos answers InvalidArgument "this config change can't be applied in
                # immediate mode" (and a diff) for a change that needs a reboot
                if mode == "Auto" and _needs_reboot(error):
                    reboot_needed.append(state.name)
                    continue
                return reboot_needed, [f"{state.name} rejected the configuration: {error.detail}"]
            live_mode: ApplyMode = "Try" if mode == "Try" else "NoReboot"
            try_timeout = (
                parse_duration(spec.config.try_timeout)
                if spec.config.try_timeout is not None
                else None
            )
            try:
                await osapi.apply_configuration(target, patched, live_mode, try_timeout=try_timeout)
            except OsApiError as error:
                return reboot_needed, [f"{state.name} rejected the configuration: {error.detail}"]
            await self.deps.kube.event(
                "NodeOSConfig",
                self.name,
                self.uid,
                "nodeos.dev/v1alpha1",
                "ConfigApplied",
                f"{state.name}: applied the configuration without a reboot",
            )
        return reboot_needed, []

    # -- rollouts --------------------------------------------------------------------------------

    async def _reconcile_plan(
        self, spec: NodeOSConfigSpec, versions_behind: list[str], reboot_needed: list[str]
    ) -> str | None:
        try:
            current: dict[str, Any] | None = await self.deps.kube.get_plan(self.plan_name)
        except NotFoundError:
            current = None
        body = self._plan_body(spec, reboot_needed)
        drifting = bool(versions_behind or reboot_needed)
        action, phase = rollout_action(current, body["spec"], drifting=drifting)
        if action == "Delete":
            await self.deps.kube.delete_plan(self.plan_name)
        elif action == "Apply":
            await self.deps.kube.apply_plan(body)
        return phase

    def _plan_body(self, spec: NodeOSConfigSpec, reboot_needed: list[str]) -> dict[str, Any]:
        plan_spec: dict[str, Any] = {
            **spec.rollout.to_api(),
            "target": spec.os.to_api() if spec.os is not None else {},
            "nodeSelector": spec.node_selector.to_api(),
            "osApi": spec.os_api.to_api(),
            "paused": spec.paused,
        }
        if reboot_needed and spec.config is not None:
            plan_spec["machineConfig"] = {"patches": list(spec.config.patches), "mode": "Staged"}
        return {
            "apiVersion": "nodeos.dev/v1alpha1",
            "kind": "UpgradePlan",
            "metadata": {
                "name": self.plan_name,
                "labels": {"nodeos.dev/nodeosconfig": self.name},
                "ownerReferences": [
                    {
                        "apiVersion": "nodeos.dev/v1alpha1",
                        "kind": "NodeOSConfig",
                        "name": self.name,
                        "uid": self.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": plan_spec,
        }

    # -- status ----------------------------------------------------------------------------------

    def _conditions(self, *wanted: tuple[str, bool, str, str]) -> list[dict[str, Any]]:
        """The status conditions (``core.summary.set_condition``: times move only on a flip)."""
        body = self.body()
        found = (body.get("status") or {}).get("conditions") or []
        conditions = [Condition.model_validate(c) for c in found]
        now = datetime.datetime.now(datetime.UTC)
        generation = body["metadata"].get("generation")
        for kind, value, reason, message in wanted:
            conditions = set_condition(conditions, kind, value, reason, message, now, generation)
        return [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in conditions]

    async def _write_status(
        self,
        spec: NodeOSConfigSpec,
        states: list[NodeState],
        patches: list[str],
        plan_phase: str | None,
        problems: list[str],
    ) -> None:
        # RFC 3339 with Z, as every other time in the API objects
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        reachable = [s for s in states if s.reachable]
        versions: dict[str, int] = {}
        for state in reachable:
            versions[state.version] = versions.get(state.version, 0) + 1
        drifted_nodes = [
            s.name
            for s in reachable
            if (spec.os is not None and s.version != spec.os.version) or s.config_drifted(patches)
        ]
        unreachable = [s.name for s in states if not s.reachable]
        first_error = next((s.error for s in states if not s.reachable), "")
        owner = f"config/{self.name}"
        for version, count in versions.items():
            metrics.series(metrics.FLEET_NODES, owner, self.name, version).set(count)
        metrics.keep_only(metrics.FLEET_NODES, owner, {(self.name, v) for v in versions})
        metrics.series(metrics.FLEET_DRIFTED, owner, self.name).set(len(drifted_nodes))
        metrics.series(metrics.FLEET_UNREACHABLE, owner, self.name).set(len(unreachable))
        ready = not drifted_nodes and not unreachable and not problems
        if problems:
            message = problems[0]
        elif drifted_nodes:
            message = f"{len(drifted_nodes)} node(s) differ: {', '.join(drifted_nodes[:5])}"
        elif unreachable:
            message = f"OS API unreachable on {', '.join(unreachable[:5])}: {first_error}"
        else:
            message = f"all {len(states)} node(s) match"
        status = {
            "observedGeneration": self.body()["metadata"].get("generation"),
            "counts": {
                "nodes": len(states),
                "upToDate": len(reachable) - len(drifted_nodes),
                "drifted": len(drifted_nodes),
                "unreachable": len(unreachable),
            },
            "versions": [{"version": v, "count": c} for v, c in sorted(versions.items())],
            "configHash": hashlib.sha256("\n---\n".join(patches).encode()).hexdigest()[:16]
            if patches
            else None,
            "upgradePlan": self.plan_name if plan_phase is not None else None,
            "lastInventory": now,
            "message": message[:1024],
            "conditions": self._conditions(
                ("Ready", ready, "InSync" if ready else "NotInSync", message),
                (
                    "Drifted",
                    bool(drifted_nodes),
                    "Drift" if drifted_nodes else "NoDrift",
                    f"{len(drifted_nodes)} node(s) drifted",
                ),
                (
                    "Degraded",
                    bool(problems),
                    "ConfigRejected" if problems else "OK",
                    problems[0] if problems else "",
                ),
                (
                    "Progressing",
                    plan_phase == "Progressing",
                    plan_phase or "NoRollout",
                    f"UpgradePlan {self.plan_name} is {plan_phase}"
                    if plan_phase
                    else "no rollout needed",
                ),
            ),
        }
        await self.deps.kube.patch_config_status(self.name, status)


async def forget_inventory(kube: KubeApi, config: str, nodes: list[str]) -> None:
    """What a deleted NodeOSConfig leaves behind: its labels, annotations and metric series."""
    for node in nodes:
        with contextlib.suppress(NotFoundError):
            await kube.label_node(
                node,
                {OS_VERSION_LABEL: None, REACHABLE_LABEL: None},
                {CONFIG_HASH_ANNOTATION: None, CONFIG_DRIFTED_ANNOTATION: None},
            )
    metrics.forget(f"config/{config}")


def _needs_reboot(error: OsApiError) -> bool:
    """Whether a NoReboot apply was refused only because the change needs a reboot."""
    return error.code == "INVALID_ARGUMENT" and "applied in immediate mode" in error.detail


def _inventoried(view: NodeView) -> tuple[object, ...]:
    """What of a Node the inventory depends on (its own labels and marks left out)."""
    labels = {k: v for k, v in view.labels.items() if not k.startswith("nodeos.dev/")}
    return (sorted(labels.items()), view.ready, view.os_image, view.boot_id, view.address)
