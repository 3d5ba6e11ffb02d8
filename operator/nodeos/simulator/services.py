"""The simulator's gRPC services: MachineService, LifecycleService and ImageService.

Every call goes through ``Gate.enter``: it checks the client certificate's roles (O= values, as
Talos does), picks the node from the ``node`` metadata key (or the endpoint's own node), refuses
calls to a node that is rebooting with Unavailable, and records the call in the fleet journal.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from cryptography import x509
from google.protobuf import empty_pb2

from nodeos.osapi.v1 import (
    common_pb2,
    image_pb2,
    image_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
)
from nodeos.ports.osapi import BOOT_ID_PATH, CONFIG_PATH
from nodeos.simulator.fleet import CALLER, Fleet
from nodeos.simulator.node import Power, SimulatedError, SimulatedInstallError, SimulatedNode

# grpc.aio.ServicerContext; grpcio ships no type information.
Context = Any

ADMIN = frozenset({"os:admin"})
OPERATOR = ADMIN | {"os:operator"}
READER = OPERATOR | {"os:reader"}

_M = "machine.MachineService/"
ALLOWED_ROLES: dict[str, frozenset[str]] = {
    _M + "Version": READER,
    _M + "Hostname": READER,
    _M + "ServiceList": READER,
    _M + "EtcdMemberList": READER,
    _M + "EtcdStatus": READER,
    _M + "Reboot": OPERATOR,
    "machine.ImageService/Pull": OPERATOR,
    _M + "Upgrade": ADMIN,
    "machine.LifecycleService/Upgrade": ADMIN,
    _M + "Rollback": ADMIN,
    _M + "ApplyConfiguration": ADMIN,
    _M + "EtcdForfeitLeadership": ADMIN,
    _M + "Read": ADMIN,
}
_SERVICES = ("apid", "containerd", "cri", "kubelet", "machined", "trustd")


# Services apid fans out to several nodes (metadata ``nodes``); others refuse it.
_ONE_TO_MANY = ("machine.MachineService/", "cluster.", "inspect.", "storage.", "time.")
FAN_OUT: contextvars.ContextVar[bool] = contextvars.ContextVar("fan_out", default=False)


class Gate:
    """Authorises, routes and records each call for one listening endpoint."""

    def __init__(self, fleet: Fleet, default_node: str, *, own: str | None = None) -> None:
        self.fleet = fleet
        self.default_node = default_node
        self.own = own  # the node whose address this endpoint is (its apid), if any

    async def enter(self, context: Context, method: str) -> SimulatedNode:
        """The node this call is for, once it may proceed; aborts the call otherwise.

        Routing follows apid's director (Talos v1.13 apid/pkg/director/director.go): ``node``
        (single-valued) forwards one-to-one and the reply carries no metadata; ``nodes``
        fans out (MachineService and the other one-to-many services only) and each reply
        message carries the node's hostname; with neither the call is served locally.
        """
        pairs = list(context.invocation_metadata() or ())
        CALLER.set(_common_name(context))
        host = self.fleet.find(self.own) if self.own else None
        if host is not None:
            self.fleet.advance()
        if host is not None and host.power in (Power.REBOOTING, Power.DOWN):
            # that node's apid is down with it: nothing listens at its address
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"failed to connect: connection refused ({host.name} is {host.power.value})",
            )
        single = [str(v) for k, v in pairs if k == "node"]
        many = [n for k, v in pairs if k == "nodes" for n in str(v).split(",") if n]
        FAN_OUT.set(bool(many))
        if len(single) > 1:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "node metadata must be single-valued"
            )
        if many and not method.startswith(_ONE_TO_MANY):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"one-to-many proxying (metadata 'nodes') is not supported for {method}",
            )
        if len(many) > 1:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "the simulator serves one node per call: use 'node', or 'nodes' with one value",
            )
        target = (single or many or [self.default_node])[0]
        node = self.fleet.find(target)
        name = node.name if node else target
        roles = _roles(context)
        if not roles & ALLOWED_ROLES[method]:
            self.fleet.record(name, method, "PERMISSION_DENIED")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"not authorized: {method} needs one of {sorted(ALLOWED_ROLES[method])}",
            )
        if node is None:
            self.fleet.record(name, method, "NOT_FOUND")
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown node {target!r}")
        assert node is not None
        self.fleet.advance()
        if self.fleet.cut_off(node.name):
            self.fleet.record(name, method, "UNAVAILABLE")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"node {name} is not reachable (network outage)"
            )
        if not node.answering():
            self.fleet.record(name, method, "UNAVAILABLE")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"node {name} is not reachable ({node.power.value})"
            )
        return node

    async def fail(
        self,
        context: Context,
        node: SimulatedNode,
        method: str,
        error: SimulatedError,
    ) -> None:
        """Records and aborts with the error's gRPC code."""
        self.fleet.record(node.name, method, error.code)
        await context.abort(getattr(grpc.StatusCode, error.code), error.message)


class MachineService(machine_pb2_grpc.MachineServiceServicer):
    """``machine.MachineService`` for the simulated fleet."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.fleet = gate.fleet

    async def Version(
        self, request: empty_pb2.Empty, context: Context
    ) -> machine_pb2.VersionResponse:
        node = await self.gate.enter(context, _M + "Version")
        self.fleet.record(node.name, _M + "Version", "OK")
        return machine_pb2.VersionResponse(
            messages=[
                machine_pb2.Version(
                    metadata=_meta(node),
                    version=machine_pb2.VersionInfo(
                        tag=node.version, sha="simulated", os="linux", arch="amd64"
                    ),
                    platform=machine_pb2.PlatformInfo(name="nodeos-simulator", mode="metal"),
                    features=machine_pb2.FeaturesInfo(rbac=True),
                )
            ]
        )

    async def Hostname(
        self, request: empty_pb2.Empty, context: Context
    ) -> machine_pb2.HostnameResponse:
        node = await self.gate.enter(context, _M + "Hostname")
        self.fleet.record(node.name, _M + "Hostname", "OK")
        return machine_pb2.HostnameResponse(
            messages=[machine_pb2.Hostname(metadata=_meta(node), hostname=node.name)]
        )

    async def ServiceList(
        self, request: empty_pb2.Empty, context: Context
    ) -> machine_pb2.ServiceListResponse:
        node = await self.gate.enter(context, _M + "ServiceList")
        self.fleet.record(node.name, _M + "ServiceList", "OK")
        ids = (*_SERVICES, "etcd") if node.control_plane else _SERVICES
        services = [
            machine_pb2.ServiceInfo(
                id=service,
                state="Running",
                health=machine_pb2.ServiceHealth(
                    healthy=not (service == "etcd" and node.faults.etcd_unhealthy)
                ),
            )
            for service in sorted(ids)
        ]
        return machine_pb2.ServiceListResponse(
            messages=[machine_pb2.ServiceList(metadata=_meta(node), services=services)]
        )

    async def Read(
        self, request: machine_pb2.ReadRequest, context: Context
    ) -> AsyncIterator[common_pb2.Data]:
        node = await self.gate.enter(context, _M + "Read")
        if request.path == BOOT_ID_PATH:
            content = (node.boot_id + "\n").encode()
        elif request.path == CONFIG_PATH:
            content = node.config
        else:
            await self.gate.fail(
                context,
                node,
                _M + "Read",
                SimulatedError("NOT_FOUND", f"{request.path}: no such file"),
            )
            return
        self.fleet.record(node.name, _M + "Read", "OK")
        yield common_pb2.Data(metadata=_meta(node), bytes=content)

    async def Upgrade(
        self, request: machine_pb2.UpgradeRequest, context: Context
    ) -> machine_pb2.UpgradeResponse:
        # Talos v1.13 v1alpha1_server.go Upgrade: the installer image is pulled and validated
        # and (on a control plane, unless force or preserve) etcd checked before the reply;
        # the install itself runs after the ack, and when it fails that is only logged: the
        # node keeps running its old version and never reboots.
        method = _M + "Upgrade"
        node = await self.gate.enter(context, method)
        try:
            node.check_image(request.image)
            if node.control_plane and not (request.force or request.preserve):
                node.check_etcd_for_upgrade()
        except SimulatedError as error:
            await self.gate.fail(context, node, method, error)
        self.fleet.record(node.name, method, "OK")
        try:
            node.install(request.image)
            node.reboot(self.fleet.clock())
        except SimulatedError as error:  # after the ack: the caller never hears of it
            self.fleet.record(node.name, method + " (background)", error.code)
        return machine_pb2.UpgradeResponse(
            messages=[
                machine_pb2.Upgrade(
                    metadata=_meta(node), ack="Upgrade request received", actor_id="simulator"
                )
            ]
        )

    async def Reboot(
        self, request: machine_pb2.RebootRequest, context: Context
    ) -> machine_pb2.RebootResponse:
        node = await self.gate.enter(context, _M + "Reboot")
        try:
            node.reboot(self.fleet.clock())
        except SimulatedError as error:
            await self.gate.fail(context, node, _M + "Reboot", error)
        self.fleet.record(node.name, _M + "Reboot", "OK")
        return machine_pb2.RebootResponse(
            messages=[machine_pb2.Reboot(metadata=_meta(node), actor_id="simulator")]
        )

    async def Rollback(
        self, request: machine_pb2.RollbackRequest, context: Context
    ) -> machine_pb2.RollbackResponse:
        node = await self.gate.enter(context, _M + "Rollback")
        try:
            node.rollback(self.fleet.clock())
        except SimulatedError as error:
            await self.gate.fail(context, node, _M + "Rollback", error)
        self.fleet.record(node.name, _M + "Rollback", "OK")
        return machine_pb2.RollbackResponse(messages=[machine_pb2.Rollback(metadata=_meta(node))])

    async def ApplyConfiguration(
        self, request: machine_pb2.ApplyConfigurationRequest, context: Context
    ) -> machine_pb2.ApplyConfigurationResponse:
        method = _M + "ApplyConfiguration"
        node = await self.gate.enter(context, method)
        mode = machine_pb2.ApplyConfigurationRequest.Mode.Name(request.mode)
        try_seconds = request.try_mode_timeout.seconds or 60
        try:
            details = node.apply_config(
                request.data,
                mode,
                dry_run=request.dry_run,
                now=self.fleet.clock(),
                try_seconds=float(try_seconds),
            )
        except SimulatedError as error:
            await self.gate.fail(context, node, method, error)
            raise
        self.fleet.record(node.name, method, "OK")
        resolved = machine_pb2.ApplyConfigurationRequest.Mode.Value(node.resolved_mode)
        return machine_pb2.ApplyConfigurationResponse(
            messages=[
                machine_pb2.ApplyConfiguration(
                    metadata=_meta(node), mode=resolved, mode_details=details
                )
            ]
        )

    async def EtcdMemberList(
        self, request: machine_pb2.EtcdMemberListRequest, context: Context
    ) -> machine_pb2.EtcdMemberListResponse:
        method = _M + "EtcdMemberList"
        node = await self.gate.enter(context, method)
        if not node.control_plane:
            await self.gate.fail(context, node, method, _not_control_plane(node))
        self.fleet.record(node.name, method, "OK")
        members = [
            machine_pb2.EtcdMember(
                id=member.member_id,
                hostname=member.name,
                peer_urls=[f"https://{member.address}:2380"],
                client_urls=[f"https://{member.address}:2379"],
            )
            for member in self.fleet.control_planes()
        ]
        return machine_pb2.EtcdMemberListResponse(
            messages=[machine_pb2.EtcdMembers(metadata=_meta(node), members=members)]
        )

    async def EtcdStatus(
        self, request: empty_pb2.Empty, context: Context
    ) -> machine_pb2.EtcdStatusResponse:
        method = _M + "EtcdStatus"
        node = await self.gate.enter(context, method)
        if not node.control_plane:
            await self.gate.fail(context, node, method, _not_control_plane(node))
        self.fleet.advance()
        leader = self.fleet.nodes[self.fleet.etcd_leader] if self.fleet.etcd_leader else None
        errors = ["member is unhealthy: simulated fault"] if node.faults.etcd_unhealthy else []
        self.fleet.record(node.name, method, "OK")
        return machine_pb2.EtcdStatusResponse(
            messages=[
                machine_pb2.EtcdStatus(
                    metadata=_meta(node),
                    member_status=machine_pb2.EtcdMemberStatus(
                        member_id=node.member_id,
                        leader=leader.member_id if leader else 0,
                        protocol_version="3.6.0",
                        storage_version="3.6.0",
                        errors=errors,
                    ),
                )
            ]
        )

    async def EtcdForfeitLeadership(
        self, request: machine_pb2.EtcdForfeitLeadershipRequest, context: Context
    ) -> machine_pb2.EtcdForfeitLeadershipResponse:
        method = _M + "EtcdForfeitLeadership"
        node = await self.gate.enter(context, method)
        if not node.control_plane:
            await self.gate.fail(context, node, method, _not_control_plane(node))
        former = self.fleet.forfeit_leadership(node.name)
        self.fleet.record(node.name, method, "OK")
        return machine_pb2.EtcdForfeitLeadershipResponse(
            messages=[machine_pb2.EtcdForfeitLeadership(metadata=_meta(node), member=former)]
        )


class LifecycleService(lifecycle_pb2_grpc.LifecycleServiceServicer):
    """``machine.LifecycleService`` (Talos 1.13+): installs only; the caller reboots."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def Upgrade(
        self, request: lifecycle_pb2.LifecycleServiceUpgradeRequest, context: Context
    ) -> AsyncIterator[lifecycle_pb2.LifecycleServiceUpgradeResponse]:
        method = "machine.LifecycleService/Upgrade"
        node = await self.gate.enter(context, method)
        if node.faults.lifecycle_unimplemented:
            await self.gate.fail(
                context, node, method, SimulatedError("UNIMPLEMENTED", "unknown service")
            )
        image = request.source.image_name
        where = _store(request.containerd)
        if image and image not in node.pulled.get(where, set()):
            # Talos v1.13 lifecycle service: the installer must have been pulled (ImageService)
            # into the same containerd before
            await self.gate.fail(
                context,
                node,
                method,
                SimulatedError(
                    "INTERNAL",
                    f"installer image {image!r} not found in containerd store {where!r}",
                ),
            )
        try:
            output = node.install(image)
            exit_code = 0
        except SimulatedInstallError as error:
            output, exit_code = error.output, error.exit_code
        except SimulatedError as error:
            await self.gate.fail(context, node, method, error)
            return
        self.gate.fleet.record(node.name, method, "OK" if exit_code == 0 else "EXIT_CODE")
        for line in output:
            yield _progress(message=line)
        yield _progress(exit_code=exit_code)


class ImageService(image_pb2_grpc.ImageServiceServicer):
    """``machine.ImageService`` (Talos 1.13+): pulls always succeed in the simulator."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def Pull(
        self, request: image_pb2.ImageServicePullRequest, context: Context
    ) -> AsyncIterator[image_pb2.ImageServicePullResponse]:
        method = "machine.ImageService/Pull"
        node = await self.gate.enter(context, method)
        if node.faults.lifecycle_unimplemented:
            await self.gate.fail(
                context, node, method, SimulatedError("UNIMPLEMENTED", "unknown service")
            )
        if not request.image_ref:
            await self.gate.fail(
                context, node, method, SimulatedError("INVALID_ARGUMENT", "image_ref is required")
            )
        node.pulled.setdefault(_store(request.containerd), set()).add(request.image_ref)
        self.gate.fleet.record(node.name, method, "OK")
        done = image_pb2.ImageServicePullLayerProgress.EXTRACT_COMPLETE
        yield image_pb2.ImageServicePullResponse(
            pull_progress=image_pb2.ImageServicePullProgress(
                layer_id="sha256:simulated",
                progress=image_pb2.ImageServicePullLayerProgress(status=done, offset=1, total=1),
            )
        )
        yield image_pb2.ImageServicePullResponse(name=request.image_ref)


def _store(instance: common_pb2.ContainerdInstance) -> str:
    """Which containerd an image lives in: driver and namespace, as Talos names them."""
    driver = common_pb2.ContainerDriver.Name(instance.driver)
    namespace = common_pb2.ContainerdNamespace.Name(instance.namespace)
    return f"{driver}/{namespace}"


def _progress(
    message: str | None = None, exit_code: int | None = None
) -> lifecycle_pb2.LifecycleServiceUpgradeResponse:
    progress = lifecycle_pb2.LifecycleServiceInstallProgress()
    if exit_code is not None:
        progress.exit_code = exit_code
    else:
        progress.message = message or ""
    return lifecycle_pb2.LifecycleServiceUpgradeResponse(progress=progress)


def _meta(node: SimulatedNode) -> common_pb2.Metadata | None:
    """Reply metadata: the hostname when fanned out (``nodes``), none otherwise (as apid)."""
    return common_pb2.Metadata(hostname=node.name) if FAN_OUT.get() else None


def _not_control_plane(node: SimulatedNode) -> SimulatedError:
    # Talos v1.13 v1alpha1_server.go: etcd RPCs on a worker
    return SimulatedError("UNIMPLEMENTED", "etcd is only available on control plane nodes")


def _roles(context: Context) -> frozenset[str]:
    certificates = context.auth_context().get("x509_pem_cert") or []
    if not certificates:
        return frozenset()
    return _roles_of(bytes(certificates[0]))


def _common_name(context: Context) -> str:
    certificates = context.auth_context().get("x509_pem_cert") or []
    return _common_name_of(bytes(certificates[0])) if certificates else ""


@functools.lru_cache(maxsize=64)
def _common_name_of(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


@functools.lru_cache(maxsize=64)
def _roles_of(pem: bytes) -> frozenset[str]:
    cert = x509.load_pem_x509_certificate(pem)
    return frozenset(
        str(attribute.value)
        for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    )
