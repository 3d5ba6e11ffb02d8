"""Performs one state-machine action against the cluster and the node's OS API.

Each function does the I/O for one ``Action`` and returns a ``Result`` for the core; none of
them decides what happens next. Transient OS API errors (the node is rebooting, briefly
unreachable) come back as transient results, never as failures.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from dataclasses import dataclass

import yaml

from nodeos.core.machineconfig import PatchError, apply_patches, drifted
from nodeos.core.nodes import NodeView
from nodeos.core.statemachine import Action, Result
from nodeos.engine.drain import drain_round
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanSpec
from nodeos.ports.kube import KubeApi
from nodeos.ports.osapi import CONFIG_PATH, NodeTarget, OsApi, OsApiError

DEFAULT_INSTALLER = "ghcr.io/siderolabs/installer"
_TAG = re.compile(r":[^:/@]+(@sha256:[0-9a-f]+)?$")


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


async def perform(action: Action, progress: NodeProgress, ctx: NodeContext) -> Result:
    """Runs ``action`` and reports the outcome."""
    try:
        match action.kind:
            case "Cordon":
                return await _cordon(ctx)
            case "Drain":
                return await _drain(ctx, action.force)
            case "Install":
                return await (_resume_install(progress, ctx) if action.resumed else _install(ctx))
            case "AwaitReboot":
                return await _await_reboot(progress, ctx, action.resumed)
            case "Verify":
                return await _verify(ctx)
            case "Uncordon":
                if progress.cordoned_by_us:
                    await ctx.kube.uncordon(ctx.node.name, ctx.plan)
                return Result()
            case "Soak":
                return await _soak(progress)
            case "Rollback":
                await ctx.osapi.rollback(ctx.target)
                return Result()
            case _:
                return Result()
    except OsApiError as error:
        if error.transient:
            return Result(transient=True, message=error.detail)
        return Result(ok=False, reason=_reason(error), message=str(error))


async def _cordon(ctx: NodeContext) -> Result:
    boot_id = await ctx.osapi.boot_id(ctx.target)
    version = (await ctx.osapi.version(ctx.target)).tag
    ours = await ctx.kube.cordon(ctx.node.name, ctx.plan)
    return Result(boot_id=boot_id, version=version, cordoned_by_us=ours)


async def _drain(ctx: NodeContext, force: bool) -> Result:
    outcome = await drain_round(
        ctx.kube, ctx.node.name, ctx.spec.drain, force=force, own_pod=ctx.own_pod
    )
    return Result(
        remaining_pods=outcome.remaining,
        message=outcome.message,
        binds_pending=outcome.binds_pending,
    )


async def _install(ctx: NodeContext) -> Result:
    """Stages the machine config (if any), installs the OS (if needed), then reboots."""
    wanted = ctx.spec.target.version
    current = (await ctx.osapi.version(ctx.target)).tag
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
    reboots_itself = False
    if wanted is not None and wanted != current:
        image = ctx.spec.target.image or await _derived_image(ctx)
        outcome = await ctx.osapi.install(ctx.target, image, ctx.spec.upgrade.api)
        reboots_itself = outcome.reboots_itself
        done.append(f"installed {image}")
    if not reboots_itself:
        await ctx.osapi.reboot(ctx.target, ctx.spec.upgrade.reboot_mode)
    return Result(reboots_itself=reboots_itself, message="; ".join(done))


async def _resume_install(progress: NodeProgress, ctx: NodeContext) -> Result:
    """After a restart mid-install: never install again; find out whether it rebooted."""
    boot_id = await ctx.osapi.boot_id(ctx.target)
    if boot_id != progress.boot_id:
        return Result(boot_id=boot_id)
    return Result(boot_id=None)


async def _await_reboot(progress: NodeProgress, ctx: NodeContext, resumed: bool) -> Result:
    boot_id = await ctx.osapi.boot_id(ctx.target)
    if boot_id == progress.boot_id and resumed:
        # The operator may have died between install and reboot; a second reboot is harmless.
        try:
            await ctx.osapi.reboot(ctx.target, ctx.spec.upgrade.reboot_mode)
        except OsApiError as error:
            if not error.transient and error.code != "FAILED_PRECONDITION":
                raise
    return Result(boot_id=boot_id)


async def _verify(ctx: NodeContext) -> Result:
    version = (await ctx.osapi.version(ctx.target)).tag
    if ctx.spec.machine_config is not None:
        config = await ctx.osapi.read_file(ctx.target, CONFIG_PATH)
        if drifted(config, ctx.spec.machine_config.patches):
            return Result(
                ok=False,
                reason="ConfigNotApplied",
                message="after the reboot the node's configuration still differs from the patches",
            )
    ready = await ctx.kube.node_ready(ctx.node.name)
    if not ready:
        return Result(version=version, unhealthy=True, message="Node is not Ready yet")
    if ctx.node.control_plane:
        status = await ctx.osapi.etcd_status(ctx.target)
        if not status.healthy:
            return Result(version=version, unhealthy=True, message="etcd member not healthy yet")
    return Result(version=version)


async def _soak(progress: NodeProgress) -> Result:
    if progress.deadline is not None:
        delay = (progress.deadline - datetime.datetime.now(datetime.UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(min(delay, 5.0))
            if datetime.datetime.now(datetime.UTC) < progress.deadline:
                return Result(transient=True, message="soaking")
    return Result()


async def _forfeit_leadership(ctx: NodeContext) -> None:
    status = await ctx.osapi.etcd_status(ctx.target)
    if status.leader == status.member_id:
        await ctx.osapi.etcd_forfeit_leadership(ctx.target)


async def _derived_image(ctx: NodeContext) -> str:
    """The node's current installer image with its tag set to the target version."""
    version = ctx.spec.target.version
    try:
        config = yaml.safe_load(await ctx.osapi.read_file(ctx.target, CONFIG_PATH)) or {}
        current = str(((config.get("machine") or {}).get("install") or {}).get("image") or "")
    except (OsApiError, yaml.YAMLError, AttributeError):
        current = ""
    if not current:
        return f"{DEFAULT_INSTALLER}:{version}"
    return _TAG.sub("", current) + f":{version}"


def _reason(error: OsApiError) -> str:
    if error.code == "InstallFailed":
        return "InstallFailed"
    return "OsApi" + "".join(part.title() for part in error.code.split("_"))
