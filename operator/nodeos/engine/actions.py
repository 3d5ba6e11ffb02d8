"""Performs one state-machine action against the cluster and the node's OS API.

Each function does the I/O for one ``Action`` and returns a ``Result`` for the core; none of
them decides what happens next. Transient OS API errors (the node is rebooting, briefly
unreachable) come back as transient results, never as failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeVar

import yaml

from nodeos.core.machineconfig import PatchError, apply_patches, drifted
from nodeos.core.nodes import NodeView
from nodeos.core.statemachine import Action, Result
from nodeos.engine.drain import drain_round
from nodeos.engine.health import first_failing
from nodeos.models.common import parse_duration
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec
from nodeos.ports.kube import KubeApi, KubeApiError, NodeHealth, NotFoundError
from nodeos.ports.osapi import CONFIG_PATH, NodeTarget, OsApi, OsApiError, OsVersion

DEFAULT_INSTALLER = "ghcr.io/siderolabs/installer"
_TAG = re.compile(r":[^:/@]+(@sha256:[0-9a-f]+)?$")
A = TypeVar("A")
B = TypeVar("B")


@dataclass
class RecordRide:
    """The node's next record, stored by the action's own Node write (cordon, uncordon).

    ``annotations(result)`` asks the state machine (``expect``) what record ``result`` would
    make, and returns the annotation that stores it, for the action to send with its write;
    the action sets ``written`` once that write is done. The worker then takes ``record`` as
    the transition, already stored, if the action's result is the one assumed.
    """

    expect: Callable[[Result], NodeProgress]
    annotation: Callable[[NodeProgress], dict[str, str]]
    # around the write: no other write of the node's record may be in flight meanwhile
    hold: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext
    result: Result | None = None
    record: NodeProgress | None = None
    written: bool = False

    def annotations(self, result: Result) -> dict[str, str]:
        """The annotation storing the record that ``result`` would make."""
        self.result, self.record = result, self.expect(result)
        return self.annotation(self.record)


@dataclass
class NodeContext:
    """What the actions of one node need."""

    plan: str
    spec: UpgradePlanSpec
    node: NodeView
    target: NodeTarget
    kube: KubeApi
    osapi: OsApi
    own_pod: tuple[str, str] | None
    # why cordoning now would break the plan's rules (asked right before the cordon)
    cordon_blocked: Callable[[], str | None] = lambda: None
    # whether a cordon mark names a plan that exists (its node is held; a stale mark is not)
    is_plan: Callable[[str], bool] = lambda name: True
    # the watch delivered a change of this Node since the worker last waited for one in vain:
    # a view that shows the Node not ready is taken at its word (a fresh read is made otherwise)
    view_is_recent: bool = True
    ride: RecordRide | None = None  # Cordon, Uncordon: the next record goes with the write
    view: Callable[[], NodeView | None] = lambda: None  # the node as watched now
    # the boot ID the action just before read (the wait for the reboot): Verify takes it
    boot_id_now: str | None = None
    # Cordon: the boot ID and version, read while the slot was being claimed (None: read now)
    read_ahead: asyncio.Future[tuple[str, OsVersion]] | None = None
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)


async def perform(action: Action, progress: NodeProgress, ctx: NodeContext) -> Result:
    """Runs ``action`` and reports the outcome; errors become results, never escape."""
    try:
        match action.kind:
            case "Cordon":
                return await _cordon(ctx)
            case "Drain":
                return await _drain(ctx, action.force)
            case "Install":
                return await _install(ctx, progress)
            case "Reboot":
                return await _reboot(progress, ctx)
            case "AwaitReboot":
                return await _await_reboot(progress, ctx)
            case "Verify":
                return await _verify(ctx, progress)
            case "Uncordon":
                if progress.cordoned_by_us is not False:
                    ride = ctx.ride.annotations(Result()) if ctx.ride else None
                    with contextlib.suppress(NotFoundError):
                        async with _held(ctx):
                            lifted = await ctx.kube.uncordon(ctx.node.name, ctx.plan, ride)
                        if lifted and ctx.ride is not None:
                            ctx.ride.written = True
                return Result()
            case "Rollback":
                return await _rollback(progress, ctx)
            case _:
                return Result()
    except OsApiError as error:
        if error.transient:
            return Result(transient=True, message=error.detail)
        return Result(ok=False, reason=_reason(error), message=str(error))
    except KubeApiError as error:
        if error.transient:
            return Result(transient=True, message=f"Kubernetes API: {error}")
        return Result(ok=False, reason="KubernetesApi", message=f"Kubernetes API: {error}")
    except NotFoundError as error:
        return Result(transient=True, message=f"not found: {error}")


def _held(ctx: NodeContext) -> AbstractAsyncContextManager[None]:
    """Around a write that carries the node's record (``RecordRide.hold``)."""
    return ctx.ride.hold() if ctx.ride is not None else contextlib.nullcontext()


async def read_before_cordon(osapi: OsApi, target: NodeTarget) -> tuple[str, OsVersion]:
    """What the cordon records of the node: its boot ID and the OS version it runs."""
    return await _both(osapi.boot_id(target), osapi.version(target))


async def _cordon(ctx: NodeContext) -> Result:
    read = None
    ahead = ctx.read_ahead
    if ahead is not None:
        await asyncio.wait([ahead])  # its error is not raised: the cordon reads again instead
        if not ahead.cancelled() and ahead.exception() is None:
            read = ahead.result()
    if read is None:
        read = await read_before_cordon(ctx.osapi, ctx.target)
    boot_id, running = read
    version = running.tag
    if (why := ctx.cordon_blocked()) is not None:
        return Result(requeue=why)
    ours = Result(boot_id=boot_id, version=version, cordoned_by_us=True)
    ride = ctx.ride.annotations(ours) if ctx.ride else None
    seen = ctx.node  # free to cordon at the version watched: no read needed unless it moved
    free = not seen.unschedulable or seen.cordoned_by == ctx.plan
    async with _held(ctx):
        cordon = await ctx.kube.cordon(
            ctx.node.name, ctx.plan, ride, seen.resource_version if free else None
        )
    if cordon.holder is not None and ctx.is_plan(cordon.holder):  # one plan at a time
        return Result(requeue=f"UpgradePlan {cordon.holder} holds the node")
    if cordon.ours and ctx.ride is not None:
        ctx.ride.written = True
    return Result(boot_id=boot_id, version=version, cordoned_by_us=cordon.ours)


async def _drain(ctx: NodeContext, force: bool) -> Result:
    listed_at = ctx.clock()  # what the round saw is as of its listing, however long it took
    outcome = await drain_round(
        ctx.kube, ctx.node.name, ctx.spec.drain, force=force, own_pod=ctx.own_pod
    )
    return Result(
        remaining_pods=outcome.remaining,
        message=outcome.message,
        binds_pending=outcome.binds_pending,
        listed_at=listed_at,
    )


async def _taken_back(ctx: NodeContext, progress: NodeProgress) -> Result | None:
    """None when the node is cordoned and drained; else what was done to get it there.

    Someone uncordoned the node since our drain: it is cordoned again and the record marked
    ``redrain``; until a drain round finds it empty, the install or reboot waits (transient,
    so the phase's deadline applies). The node is judged as watched now, not as it was when
    the action began (an OS API call before may have taken long).
    """
    seen = ctx.view() or ctx.node
    if not seen.unschedulable:
        cordon = await ctx.kube.cordon(ctx.node.name, ctx.plan)
        if cordon.holder is not None and ctx.is_plan(cordon.holder):
            return Result(transient=True, message=f"UpgradePlan {cordon.holder} cordoned the node")
        return Result(
            transient=True,
            cordoned_by_us=cordon.ours,
            redrain=ctx.spec.drain.enabled,
            message="the node was uncordoned by someone else; cordoned it again",
        )
    if not progress.redrain:
        return None
    outcome = await drain_round(
        ctx.kube, ctx.node.name, ctx.spec.drain, force=False, own_pod=ctx.own_pod
    )
    if outcome.remaining or outcome.binds_pending:
        return Result(
            transient=True,
            message=f"draining again after someone uncordoned the node: {outcome.message}",
        )
    return None


async def _install(ctx: NodeContext, progress: NodeProgress) -> Result:
    """Stages the machine config (if any) and installs the OS (if needed); never reboots.

    The install call is the one step not sent twice in an attempt: when its reply is lost the
    result says so (``unconfirmed``) and the reboot and version check decide.
    """
    wanted = progress.target
    image = ctx.spec.target.image if ctx.spec.target.version == wanted else None
    if wanted is not None and image is None and ctx.spec.machine_config is None:
        # the installer image to derive from is read beside the version: one round trip
        running, image = await _both(ctx.osapi.version(ctx.target), _derived_image(ctx, wanted))
    else:
        running = await ctx.osapi.version(ctx.target)
    current = running.tag
    done: list[str] = []
    if ctx.spec.machine_config is not None:
        # Staged first: a legacy Upgrade reboots by itself and must pick the config up.
        config = await ctx.osapi.read_file(ctx.target, CONFIG_PATH)
        try:
            patched = apply_patches(config, ctx.spec.machine_config.patches)
        except PatchError as error:
            return Result(ok=False, reason="InvalidPatch", message=str(error))
        await ctx.osapi.apply_configuration(ctx.target, patched, "Staged")
        done.append("staged the machine config")
    if ctx.node.control_plane:
        await _forfeit_leadership(ctx)
    if wanted is None or wanted == current:
        if (again := await _taken_back(ctx, progress)) is not None:
            return again
        return Result(message="; ".join(done) or "nothing to install; rebooting")
    image = image or await _derived_image(ctx, wanted)
    if (again := await _taken_back(ctx, progress)) is not None:  # as late as it can be
        return again
    try:
        outcome = await ctx.osapi.install(ctx.target, image, ctx.spec.upgrade.api)
    except OsApiError as error:
        if not error.transient:
            raise
        return Result(
            unconfirmed=True,
            message=f"sent the install of {image} but its reply was lost ({error.detail}); "
            "rebooting and checking the version instead of installing twice",
        )
    done.append(f"installed {image}")
    return Result(reboot_requested=outcome.reboots_itself, message="; ".join(done))


async def _reboot(progress: NodeProgress, ctx: NodeContext) -> Result:
    """Reboots the node unless it already runs a boot other than the recorded one."""
    boot_id = await ctx.osapi.boot_id(ctx.target)
    if progress.boot_id and boot_id != progress.boot_id:
        return Result(boot_id=boot_id)
    if (again := await _taken_back(ctx, progress)) is not None:
        return again
    await ctx.osapi.reboot(ctx.target, ctx.spec.upgrade.reboot_mode)
    return Result(boot_id=boot_id, reboot_requested=True)


async def _await_reboot(progress: NodeProgress, ctx: NodeContext) -> Result:
    boot_id = await ctx.osapi.boot_id(ctx.target, rebooting=True)
    if boot_id != progress.boot_id and progress.phase == "RollingBack":
        return await _rolled_back(ctx, boot_id)
    return Result(boot_id=boot_id)


async def _rollback(progress: NodeProgress, ctx: NodeContext) -> Result:
    """Asks the node to boot its previous OS, unless it already rebooted since it was verified."""
    boot_id = await ctx.osapi.boot_id(ctx.target)
    if progress.boot_id and boot_id != progress.boot_id:
        return await _rolled_back(ctx, boot_id)
    await ctx.osapi.rollback(ctx.target)
    return Result(boot_id=boot_id, reboot_requested=True)


async def _rolled_back(ctx: NodeContext, boot_id: str) -> Result:
    """A node back from its rollback reboot: verified like an upgrade (version, boot, Ready).

    Until the Node is Ready on the new boot, the result reports no new boot, so the node stays
    RollingBack (and fails RollbackFailed at its deadline, naming what was missing).
    """
    version = (await ctx.osapi.version(ctx.target)).tag
    health = await ctx.kube.node_health(ctx.node.name)
    if not health.ready:
        return Result(message=f"back on {version} but the Node is not Ready yet")
    if health.boot_id and health.boot_id != boot_id:
        return Result(message=f"back on {version}; the Node still reports the previous boot")
    return Result(boot_id=boot_id, version=version)


async def _verify(ctx: NodeContext, progress: NodeProgress) -> Result:
    if ctx.boot_id_now is not None:
        running, boot_id = await ctx.osapi.version(ctx.target), ctx.boot_id_now
    else:
        running, boot_id = await _both(ctx.osapi.version(ctx.target), ctx.osapi.boot_id(ctx.target))
    version = running.tag
    if ctx.spec.machine_config is not None:
        config = await ctx.osapi.read_file(ctx.target, CONFIG_PATH)
        if drifted(config, ctx.spec.machine_config.patches):
            return Result(
                ok=False,
                reason="ConfigNotApplied",
                message="after the reboot the node's configuration still differs from the patches",
            )
    problem = None
    seen = ctx.view() or ctx.node
    if ctx.view_is_recent:
        # The Node as watched now: what the API server last said. Not Ready on this boot yet,
        # the worker checks again when it changes; a wait that timed out reads it afresh.
        health = NodeHealth(ready=seen.ready, boot_id=seen.boot_id)
    else:
        health = await ctx.kube.node_health(ctx.node.name)
    if not health.ready:
        problem = "Node is not Ready yet"
    elif health.boot_id and health.boot_id != boot_id:
        # Ready left over from before the reboot: the kubelet has not reported this boot yet.
        problem = "the Node still reports the boot before the reboot"
    elif ctx.node.control_plane and ctx.spec.strategy.control_plane.require_healthy_etcd:
        status = await ctx.osapi.etcd_status(ctx.target)
        if not status.healthy:
            problem = "etcd member not healthy yet"
    if problem is None and ctx.spec.health_checks:
        failing = await first_failing(ctx.kube, ctx.spec.health_checks, "After")
        if failing is not None:
            check, verdict = failing
            return Result(
                version=version,
                unhealthy=True,
                message=verdict.message,
                boot_id=boot_id,
                check_timeout=parse_duration(check.timeout),
            )
    if problem is None:
        return Result(version=version)
    return Result(
        version=version,
        unhealthy=True,
        message=problem,
        boot_id=boot_id,
        awaits_node=not health.ready or health.boot_id != boot_id,
    )


async def _forfeit_leadership(ctx: NodeContext) -> None:
    status = await ctx.osapi.etcd_status(ctx.target)
    if status.leader == status.member_id:
        await ctx.osapi.etcd_forfeit_leadership(ctx.target)


async def _derived_image(ctx: NodeContext, version: str) -> str:
    """The node's current installer image with its tag set to ``version``.

    A config that cannot be read now (the node briefly unreachable) is an error to retry:
    the default installer would drop the node's factory schematic, its system extensions.
    Only a config that has no installer image, or cannot be parsed or read at all, gets the
    default.
    """
    try:
        config = yaml.safe_load(await ctx.osapi.read_file(ctx.target, CONFIG_PATH)) or {}
        current = str(((config.get("machine") or {}).get("install") or {}).get("image") or "")
    except OsApiError as error:
        if error.transient:
            raise
        current = ""
    except (yaml.YAMLError, AttributeError):
        current = ""
    if not current:
        return f"{DEFAULT_INSTALLER}:{version}"
    return _TAG.sub("", current) + f":{version}"


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Two independent calls made at once; the first one's error, if any, once both ended."""
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):
        raise one
    if isinstance(two, BaseException):
        raise two
    return one, two


def _reason(error: OsApiError) -> str:
    if error.code == "InstallFailed":
        return "InstallFailed"
    return "OsApi" + "".join(part.title() for part in error.code.split("_"))
