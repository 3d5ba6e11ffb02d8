"""``TalosClient``: the ``OsApi`` port over the Talos machine API (grpc.aio, mTLS).

One channel per endpoint, rebuilt when the credentials change. Every call carries a deadline and,
when the target is routed, the ``node`` metadata key. A call that fails on credentials re-reads
the talosconfig once and is retried once, which picks up rotated certificates (Talos in-cluster
certificates live 6 h). Reconnect backoff is kept short so a node is seen again soon after it
comes back from a reboot.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf import duration_pb2, empty_pb2

from nodeos.adapters.osapi.errors import classify
from nodeos.adapters.osapi.talosconfig import Credentials, CredentialSource, TalosConfigError
from nodeos.osapi.v1 import (
    common_pb2,
    image_pb2,
    image_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
)
from nodeos.ports.fence import FENCE
from nodeos.ports.osapi import (
    BOOT_ID_PATH,
    ApplyMode,
    ApplyOutcome,
    ErrorKind,
    EtcdMember,
    EtcdMemberStatus,
    InstallFailedError,
    InstallOutcome,
    NodeTarget,
    OsApiError,
    OsVersion,
    RebootMode,
    ServiceStatus,
    UpgradeApi,
)

DEFAULT_PORT = 50000
_EXPIRY_MARGIN_S = 60.0
CallObserver = Callable[[str, float, ErrorKind | None], None]
T = TypeVar("T")

_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30000),
)
_APPLY_MODES: dict[ApplyMode, int] = {
    "Reboot": machine_pb2.ApplyConfigurationRequest.REBOOT,
    "Auto": machine_pb2.ApplyConfigurationRequest.AUTO,
    "NoReboot": machine_pb2.ApplyConfigurationRequest.NO_REBOOT,
    "Staged": machine_pb2.ApplyConfigurationRequest.STAGED,
    "Try": machine_pb2.ApplyConfigurationRequest.TRY,
}
_APPLY_MODE_NAMES = {number: name for name, number in _APPLY_MODES.items()}
_REBOOT_MODES: dict[RebootMode, int] = {
    "Default": machine_pb2.RebootRequest.DEFAULT,
    "Powercycle": machine_pb2.RebootRequest.POWERCYCLE,
    "Force": machine_pb2.RebootRequest.FORCE,
}


class TalosClient:
    """Talks to nodes' OS API with the credentials from one talosconfig source."""

    def __init__(
        self,
        source: CredentialSource,
        *,
        timeout_s: float = 10.0,
        install_timeout_s: float = 600.0,
        observer: CallObserver | None = None,
        tls_server_name: str | None = None,
        containerd: Literal["CRI", "System"] = "CRI",
    ) -> None:
        self._source = source
        # talosctl's default: the CRI containerd (namespace k8s.io), which honours the
        # machine's registry mirrors; "System" is Talos's own (namespace system)
        self._containerd = (
            common_pb2.ContainerdInstance(driver=common_pb2.CRI, namespace=common_pb2.NS_CRI)
            if containerd == "CRI"
            else common_pb2.ContainerdInstance(
                driver=common_pb2.CONTAINERD, namespace=common_pb2.NS_SYSTEM
            )
        )
        self._timeout_s = timeout_s
        self._install_timeout_s = install_timeout_s
        self._observer = observer
        self._tls_server_name = tls_server_name
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._answering: str | None = None  # the endpoint that last answered a routed call
        self._fingerprint = ""

    # -- OsApi ---------------------------------------------------------------------------

    async def version(self, node: NodeTarget) -> OsVersion:
        """The running OS version (``Version``)."""
        reply = await self._call(
            node,
            "Version",
            lambda ch, md, t: _machine(ch).Version(empty_pb2.Empty(), metadata=md, timeout=t),
        )
        message = _first(reply, node, "Version")
        return OsVersion(
            tag=message.version.tag,
            sha=message.version.sha,
            arch=message.version.arch,
            platform=message.platform.name,
        )

    async def hostname(self, node: NodeTarget) -> str:
        """The node's hostname (``Hostname``)."""
        reply = await self._call(
            node,
            "Hostname",
            lambda ch, md, t: _machine(ch).Hostname(empty_pb2.Empty(), metadata=md, timeout=t),
        )
        return str(_first(reply, node, "Hostname").hostname)

    async def read_file(self, node: NodeTarget, path: str, *, expect_down: bool = False) -> bytes:
        """A file's bytes (``Read``, a server stream of ``common.Data``)."""

        async def read(ch: grpc.aio.Channel, md: _Metadata, t: float) -> bytes:
            chunks = []
            stream = _machine(ch).Read(machine_pb2.ReadRequest(path=path), metadata=md, timeout=t)
            async for data in stream:
                chunks.append(data.bytes)
            return b"".join(chunks)

        return await self._call(node, "Read", read, expect_down=expect_down)

    async def boot_id(self, node: NodeTarget, *, rebooting: bool = False) -> str:
        """The boot ID, read from ``/proc/sys/kernel/random/boot_id``."""
        return (await self.read_file(node, BOOT_ID_PATH, expect_down=rebooting)).decode().strip()

    async def services(self, node: NodeTarget) -> list[ServiceStatus]:
        """The OS services (``ServiceList``)."""
        reply = await self._call(
            node,
            "ServiceList",
            lambda ch, md, t: _machine(ch).ServiceList(empty_pb2.Empty(), metadata=md, timeout=t),
        )
        return [
            ServiceStatus(
                id=service.id,
                state=service.state,
                healthy=service.health.healthy,
                health_unknown=service.health.unknown,
            )
            for service in _first(reply, node, "ServiceList").services
        ]

    async def install(
        self, node: NodeTarget, image: str, api: UpgradeApi = "Auto"
    ) -> InstallOutcome:
        """Installs ``image``: the 1.13+ Pull + LifecycleService.Upgrade, or legacy Upgrade."""
        if api in ("Auto", "Lifecycle"):
            try:
                return await self._install_lifecycle(node, image)
            except OsApiError as error:
                if api == "Lifecycle" or error.code != "UNIMPLEMENTED":
                    raise
        reply = await self._call(
            node,
            "Upgrade",
            lambda ch, md, t: _machine(ch).Upgrade(
                machine_pb2.UpgradeRequest(image=image), metadata=md, timeout=t
            ),
            timeout_s=self._install_timeout_s,
        )
        ack = _first(reply, node, "Upgrade").ack
        return InstallOutcome(api="Legacy", reboots_itself=True, messages=(ack,) if ack else ())

    async def _install_lifecycle(self, node: NodeTarget, image: str) -> InstallOutcome:
        containerd = self._containerd

        async def pull(ch: grpc.aio.Channel, md: _Metadata, t: float) -> None:
            request = image_pb2.ImageServicePullRequest(containerd=containerd, image_ref=image)
            async for _ in image_pb2_grpc.ImageServiceStub(ch).Pull(
                request, metadata=md, timeout=t
            ):
                pass

        async def upgrade(ch: grpc.aio.Channel, md: _Metadata, t: float) -> tuple[list[str], int]:
            request = lifecycle_pb2.LifecycleServiceUpgradeRequest(
                containerd=containerd,
                source=lifecycle_pb2.InstallArtifactsSource(image_name=image),
            )
            messages: list[str] = []
            exit_code = 0
            stub = lifecycle_pb2_grpc.LifecycleServiceStub(ch)
            async for reply in stub.Upgrade(request, metadata=md, timeout=t):
                progress = reply.progress
                if progress.WhichOneof("response") == "exit_code":
                    exit_code = progress.exit_code
                elif progress.message:
                    messages.append(progress.message)
            return messages, exit_code

        await self._call(node, "ImageService.Pull", pull, timeout_s=self._install_timeout_s)
        messages, exit_code = await self._call(
            node, "LifecycleService.Upgrade", upgrade, timeout_s=self._install_timeout_s
        )
        if exit_code != 0:
            raise InstallFailedError(node.name, exit_code, tuple(messages))
        return InstallOutcome(api="Lifecycle", reboots_itself=False, messages=tuple(messages))

    async def reboot(self, node: NodeTarget, mode: RebootMode = "Default") -> None:
        """Asks for a reboot (``Reboot``); the node answers at once and reboots after."""
        request = machine_pb2.RebootRequest(mode=_REBOOT_MODES[mode])  # type: ignore[arg-type]
        await self._call(
            node, "Reboot", lambda ch, md, t: _machine(ch).Reboot(request, metadata=md, timeout=t)
        )

    async def rollback(self, node: NodeTarget) -> None:
        """Boots the previous OS (``Rollback``)."""
        await self._call(
            node,
            "Rollback",
            lambda ch, md, t: _machine(ch).Rollback(
                machine_pb2.RollbackRequest(), metadata=md, timeout=t
            ),
        )

    async def apply_configuration(
        self,
        node: NodeTarget,
        config: bytes,
        mode: ApplyMode,
        *,
        dry_run: bool = False,
        try_timeout: datetime.timedelta | None = None,
    ) -> ApplyOutcome:
        """Applies a machine configuration (``ApplyConfiguration``)."""
        request = machine_pb2.ApplyConfigurationRequest(
            data=config,
            mode=_APPLY_MODES[mode],  # type: ignore[arg-type]
            dry_run=dry_run,
        )
        if try_timeout is not None:
            request.try_mode_timeout.CopyFrom(
                duration_pb2.Duration(seconds=int(try_timeout.total_seconds()))
            )
        reply = await self._call(
            node,
            "ApplyConfiguration",
            lambda ch, md, t: _machine(ch).ApplyConfiguration(request, metadata=md, timeout=t),
        )
        message = _first(reply, node, "ApplyConfiguration")
        return ApplyOutcome(
            mode=_APPLY_MODE_NAMES.get(message.mode, "Auto"),
            details=message.mode_details,
            warnings=tuple(message.warnings),
        )

    async def etcd_members(self, node: NodeTarget) -> list[EtcdMember]:
        """The etcd members (``EtcdMemberList``)."""
        reply = await self._call(
            node,
            "EtcdMemberList",
            lambda ch, md, t: _machine(ch).EtcdMemberList(
                machine_pb2.EtcdMemberListRequest(), metadata=md, timeout=t
            ),
        )
        return [
            EtcdMember(id=member.id, hostname=member.hostname, is_learner=member.is_learner)
            for member in _first(reply, node, "EtcdMemberList").members
        ]

    async def etcd_status(self, node: NodeTarget) -> EtcdMemberStatus:
        """This node's etcd member status (``EtcdStatus``)."""
        reply = await self._call(
            node,
            "EtcdStatus",
            lambda ch, md, t: _machine(ch).EtcdStatus(empty_pb2.Empty(), metadata=md, timeout=t),
        )
        status = _first(reply, node, "EtcdStatus").member_status
        return EtcdMemberStatus(
            member_id=status.member_id,
            leader=status.leader,
            is_learner=status.is_learner,
            errors=tuple(status.errors),
        )

    async def etcd_forfeit_leadership(self, node: NodeTarget) -> str:
        """Moves etcd leadership off this node (``EtcdForfeitLeadership``).

        Returns the new leader's name, or "" when this node was not the leader.
        """
        reply = await self._call(
            node,
            "EtcdForfeitLeadership",
            lambda ch, md, t: _machine(ch).EtcdForfeitLeadership(
                machine_pb2.EtcdForfeitLeadershipRequest(), metadata=md, timeout=t
            ),
        )
        return str(_first(reply, node, "EtcdForfeitLeadership").member)

    async def close(self) -> None:
        """Closes every channel."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    # -- plumbing --------------------------------------------------------------------------

    async def _call(
        self,
        node: NodeTarget,
        method: str,
        invoke: Callable[[grpc.aio.Channel, _Metadata, float], Awaitable[T]],
        *,
        timeout_s: float | None = None,
        expect_down: bool = False,
    ) -> T:
        FENCE.check()
        started = time.monotonic()
        metadata: _Metadata = (("node", node.route),) if node.route else ()
        candidates = self._endpoints(node)
        attempt = 1
        while True:
            endpoint = candidates[0]
            target = dataclasses.replace(node, endpoint=endpoint)
            try:
                channel = await self._channel(target, force_reload=attempt == 2)
            except TalosConfigError as unusable:  # the talosconfig is gone or broken
                self._observe(method, started, ErrorKind.CREDENTIALS)
                raise OsApiError(
                    node.name, ErrorKind.CREDENTIALS, "TalosConfig", str(unusable)
                ) from None
            try:
                result = await invoke(channel, metadata, timeout_s or self._timeout_s)
            except grpc.aio.AioRpcError as rpc_error:
                error = classify(node.name, endpoint, method, rpc_error)
                if error.kind is ErrorKind.CREDENTIALS and attempt == 1:
                    attempt = 2
                    continue
                if len(candidates) > 1 and _not_connected(rpc_error):
                    # the call never reached that endpoint: another one can route it
                    candidates = candidates[1:]
                    continue
                down = expect_down and error.kind is ErrorKind.TRANSIENT  # a reboot, not a fault
                self._observe(method, started, None if down else error.kind)
                raise error from None
            if node.fallbacks:
                self._answering = endpoint
            self._observe(method, started, None)
            return result

    def _endpoints(self, node: NodeTarget) -> list[str]:
        """Where to dial, in order: the one that last answered first, if it may route this."""
        candidates = [node.endpoint, *node.fallbacks]
        if self._answering in candidates[1:]:
            candidates.remove(self._answering)
            candidates.insert(0, self._answering)
        return candidates

    async def _channel(self, node: NodeTarget, *, force_reload: bool) -> grpc.aio.Channel:
        credentials = await self._source.load(force=force_reload)
        if credentials.not_after <= time.time() + _EXPIRY_MARGIN_S:
            # Under TLS 1.3 a server refusing an expired client certificate only shows up as a
            # closed socket, indistinguishable from a reboot, so check before dialing.
            credentials = await self._source.load(force=True)
            if credentials.not_after <= time.time():
                expired = datetime.datetime.fromtimestamp(credentials.not_after, datetime.UTC)
                raise OsApiError(
                    node.name,
                    ErrorKind.CREDENTIALS,
                    "CertificateExpired",
                    f"the client certificate in {self._source.description} expired at "
                    f"{expired:%Y-%m-%d %H:%M:%S}Z; renew the talosconfig",
                )
        if credentials.fingerprint != self._fingerprint:
            await self.close()
            self._fingerprint = credentials.fingerprint
        address = _with_port(node.endpoint)
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.secure_channel(
                address, _channel_credentials(credentials), options=self._options()
            )
            self._channels[address] = channel
        return channel

    def _options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = list(_CHANNEL_OPTIONS)
        if self._tls_server_name:
            options.append(("grpc.ssl_target_name_override", self._tls_server_name))
        return options

    def _observe(self, method: str, started: float, kind: ErrorKind | None) -> None:
        if self._observer is not None:
            self._observer(method, time.monotonic() - started, kind)


_Metadata = tuple[tuple[str, str], ...]


_MACHINE_STUBS: weakref.WeakKeyDictionary[grpc.aio.Channel, machine_pb2_grpc.MachineServiceStub] = (
    weakref.WeakKeyDictionary()
)


def _machine(channel: grpc.aio.Channel) -> machine_pb2_grpc.MachineServiceStub:
    """The channel's MachineService stub, made once (making one builds every method's caller)."""
    stub = _MACHINE_STUBS.get(channel)
    if stub is None:
        stub = _MACHINE_STUBS[channel] = machine_pb2_grpc.MachineServiceStub(channel)
    return stub


def _channel_credentials(credentials: Credentials) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=credentials.ca_pem,
        private_key=credentials.key_pem,
        certificate_chain=credentials.cert_pem,
    )


def _not_connected(error: grpc.aio.AioRpcError) -> bool:
    """True when the call failed before reaching the endpoint (so it was not delivered)."""
    details = (error.details() or "").lower()
    return error.code() is grpc.StatusCode.UNAVAILABLE and any(
        marker in details
        for marker in ("connection refused", "failed to connect", "no route to host", "dns")
    )


def _first(reply: Any, node: NodeTarget, method: str) -> Any:
    """``messages[0]`` of a Talos envelope; a metadata error there is a permanent failure."""
    if not reply.messages:
        raise OsApiError(node.name, ErrorKind.PERMANENT, "EmptyReply", f"{method}: empty reply")
    message = reply.messages[0]
    if message.HasField("metadata") and message.metadata.error:
        raise OsApiError(
            node.name, ErrorKind.PERMANENT, "NodeError", f"{method}: {message.metadata.error}"
        )
    return message


def _with_port(endpoint: str) -> str:
    if endpoint.startswith("["):
        return endpoint if "]:" in endpoint else f"{endpoint}:{DEFAULT_PORT}"
    return endpoint if ":" in endpoint else f"{endpoint}:{DEFAULT_PORT}"
