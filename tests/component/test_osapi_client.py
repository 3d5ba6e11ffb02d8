"""TalosClient against the in-process simulator: real gRPC, real mTLS, nothing mocked between."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2

from nodeos.adapters.osapi.client import TalosClient
from nodeos.adapters.osapi.talosconfig import FileSource, SecretSource, TalosConfigError
from nodeos.core.nodes import NodeView
from nodeos.engine.routing import Routing
from nodeos.osapi.v1 import (
    common_pb2,
    image_pb2,
    image_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
)
from nodeos.ports.osapi import (
    CONFIG_PATH,
    ErrorKind,
    InstallFailedError,
    NodeTarget,
    OsApiError,
)
from nodeos.simulator.fleet import Fleet
from nodeos.simulator.node import Faults, Power
from nodeos.simulator.server import NodeSpec, Simulator, build_fleet

OLD, NEW = "v1.12.4", "v1.13.9"
IMAGE = f"ghcr.io/siderolabs/installer:{NEW}"
REBOOT_S = 0.4


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    specs = [
        NodeSpec("cp-1", control_plane=True),
        NodeSpec("cp-2", control_plane=True),
        NodeSpec("cp-3", control_plane=True, faults=Faults(etcd_unhealthy=True)),
        NodeSpec("w-ok"),
        NodeSpec("w-install-fails", faults=Faults(install_exit_code=3)),
        NodeSpec("w-never-returns", faults=Faults(never_returns=True)),
        NodeSpec("w-fallback", faults=Faults(boot_fallback=True)),
        NodeSpec("w-legacy", faults=Faults(lifecycle_unimplemented=True)),
        NodeSpec("w-flaky", faults=Faults(unavailable_calls=2)),
        NodeSpec("w-slow", faults=Faults(reboot_seconds=1.5)),
        NodeSpec("w-rejects", faults=Faults(reject_config="machine.network: bad interface")),
    ]
    sim = Simulator(build_fleet(specs, OLD, REBOOT_S), per_node_addresses=True)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def talosconfig(simulator: Simulator, tmp_path: Path) -> Path:
    return simulator.write_talosconfig(tmp_path / "talosconfig")


@pytest.fixture
async def client(talosconfig: Path) -> AsyncIterator[TalosClient]:
    api = TalosClient(FileSource(talosconfig), timeout_s=3)
    yield api
    await api.close()


def routed(sim: Simulator, name: str) -> NodeTarget:
    return NodeTarget(name=name, endpoint=sim.endpoint, route=name)


async def wait_for(check: Callable[[], object], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def wait_until_back(client: TalosClient, node: NodeTarget, old_boot: str) -> str:
    """Polls like the engine will: transient errors are expected while the node reboots."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            boot = await client.boot_id(node)
        except OsApiError as error:
            assert error.transient, error
            await asyncio.sleep(0.05)
            continue
        if boot != old_boot:
            return boot
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node.name} did not come back")


async def test_read_only_calls(simulator: Simulator, client: TalosClient) -> None:
    node = routed(simulator, "w-ok")
    assert (await client.version(node)).tag == OLD
    assert await client.hostname(node) == "w-ok"
    services = {s.id: s for s in await client.services(node)}
    assert services["kubelet"].healthy and "etcd" not in services
    boot = await client.boot_id(node)
    assert len(boot) == 36 and boot == simulator.fleet.nodes["w-ok"].boot_id
    assert b"type: worker" in await client.read_file(node, CONFIG_PATH)


async def test_per_node_address_serves_that_node_without_routing(
    simulator: Simulator, client: TalosClient
) -> None:
    address = simulator.fleet.nodes["w-ok"].address
    direct = NodeTarget(name="w-ok", endpoint=f"{address}:{simulator.port}")
    assert await client.hostname(direct) == "w-ok"


async def test_each_listener_presents_a_certificate_for_its_own_names(
    simulator: Simulator, talosconfig: Path, tmp_path: Path
) -> None:
    # gRPC walks the server certificate's names on every call: one certificate naming the
    # whole fleet made each call cost time in proportion to the fleet's size
    shared = await asyncio.to_thread(_presented_names, talosconfig, "127.0.0.1", simulator.port)
    assert shared == {"localhost", "talos", "talos.default", "127.0.0.1"}
    node = simulator.fleet.nodes["w-ok"]
    own = await asyncio.to_thread(_presented_names, talosconfig, node.address, simulator.port)
    assert own == {"w-ok", node.address}


def _presented_names(talosconfig: Path, host: str, port: int) -> set[str]:
    """The subject alternative names of the certificate the listener at ``host`` presents."""
    context = yaml.safe_load(talosconfig.read_text())["contexts"]["simulator"]
    pem = {field: base64.b64decode(context[field]) for field in ("ca", "crt", "key")}
    keys = talosconfig.parent / f"keys-{host}"
    keys.mkdir()
    for field, data in pem.items():
        (keys / field).write_bytes(data)
    tls = ssl.create_default_context(cadata=pem["ca"].decode())
    tls.load_cert_chain(keys / "crt", keys / "key")
    tls.set_alpn_protocols(["h2"])
    tls.check_hostname = False  # the names are what is read here
    with socket.create_connection((host, port), timeout=5) as raw, tls.wrap_socket(raw) as conn:
        return {value for _, value in conn.getpeercert()["subjectAltName"]}


async def test_lifecycle_upgrade_then_reboot_brings_the_new_version_and_boot_id(
    simulator: Simulator, client: TalosClient
) -> None:
    node = routed(simulator, "w-ok")
    before = await client.boot_id(node)
    outcome = await client.install(node, IMAGE)
    assert outcome.api == "Lifecycle" and not outcome.reboots_itself
    assert (await client.version(node)).tag == OLD, "installed, not yet booted"
    await client.reboot(node)
    after = await wait_until_back(client, node, before)
    assert after != before
    assert (await client.version(node)).tag == NEW
    fleet = simulator.fleet
    assert fleet.count("machine.ImageService/Pull", "w-ok") == 1
    assert fleet.count("machine.LifecycleService/Upgrade", "w-ok") == 1
    assert fleet.count("machine.MachineService/Upgrade", "w-ok") == 0
    assert fleet.count("machine.MachineService/Reboot", "w-ok") == 1
    assert fleet.count("machine.MachineService/Read", "w-ok", code="UNAVAILABLE") >= 1


async def test_falls_back_to_legacy_upgrade_when_lifecycle_is_unimplemented(
    simulator: Simulator, client: TalosClient
) -> None:
    node = routed(simulator, "w-legacy")
    before = await client.boot_id(node)
    outcome = await client.install(node, IMAGE)
    assert outcome.api == "Legacy" and outcome.reboots_itself
    assert outcome.messages == ("Upgrade request received",)
    await wait_until_back(client, node, before)
    assert (await client.version(node)).tag == NEW
    assert simulator.fleet.count("machine.MachineService/Upgrade", "w-legacy") == 1
    assert simulator.fleet.count("machine.MachineService/Reboot", "w-legacy") == 0


async def test_lifecycle_only_does_not_fall_back(simulator: Simulator, client: TalosClient) -> None:
    with pytest.raises(OsApiError) as failed:
        await client.install(routed(simulator, "w-legacy"), IMAGE, api="Lifecycle")
    assert failed.value.code == "UNIMPLEMENTED" and not failed.value.transient


async def test_legacy_api_can_be_forced(simulator: Simulator, client: TalosClient) -> None:
    outcome = await client.install(routed(simulator, "w-ok"), IMAGE, api="Legacy")
    assert outcome.api == "Legacy"
    assert simulator.fleet.count("machine.LifecycleService/Upgrade", "w-ok") == 0


async def test_installer_exit_code_is_a_permanent_failure(
    simulator: Simulator, client: TalosClient
) -> None:
    with pytest.raises(InstallFailedError) as failed:
        await client.install(routed(simulator, "w-install-fails"), IMAGE)
    error = failed.value
    assert error.exit_code == 3 and error.kind is ErrorKind.PERMANENT
    assert "w-install-fails" in str(error) and "disk write error" in str(error)
    assert simulator.fleet.nodes["w-install-fails"].power is Power.RUNNING


async def test_a_legacy_install_that_fails_is_acked_and_the_node_never_reboots(
    simulator: Simulator, client: TalosClient
) -> None:
    # As on Talos: the legacy Upgrade acks once the image checks out; the install runs after
    # the reply, and its failure is only logged. The caller learns it only by the node
    # never rebooting (the engine's NotRebooted).
    node = routed(simulator, "w-install-fails")
    before = await client.boot_id(node)
    outcome = await client.install(node, IMAGE, api="Legacy")
    assert outcome.api == "Legacy" and outcome.reboots_itself
    assert outcome.messages == ("Upgrade request received",)
    await asyncio.sleep(0.3)
    assert await client.boot_id(node) == before
    assert (await client.version(node)).tag == OLD
    assert (
        simulator.fleet.count(
            "machine.MachineService/Upgrade (background)", "w-install-fails", "INSTALL_FAILED"
        )
        == 1
    )


async def test_bad_image_is_invalid_argument(simulator: Simulator, client: TalosClient) -> None:
    with pytest.raises(OsApiError) as failed:
        await client.install(routed(simulator, "w-ok"), "ghcr.io/siderolabs/installer:latest")
    assert failed.value.code == "INVALID_ARGUMENT" and not failed.value.transient


async def test_node_that_never_returns_stays_transiently_unavailable(
    simulator: Simulator, client: TalosClient
) -> None:
    node = routed(simulator, "w-never-returns")
    await client.install(node, IMAGE)
    await client.reboot(node)
    await wait_for(lambda: simulator.fleet.nodes["w-never-returns"].power is Power.DOWN)
    await asyncio.sleep(REBOOT_S * 2)
    with pytest.raises(OsApiError) as failed:
        await client.version(node)
    assert failed.value.kind is ErrorKind.TRANSIENT and failed.value.code == "UNAVAILABLE"
    assert "w-never-returns" in str(failed.value)


async def test_boot_fallback_comes_back_on_the_old_version_with_a_new_boot_id(
    simulator: Simulator, client: TalosClient
) -> None:
    node = routed(simulator, "w-fallback")
    before = await client.boot_id(node)
    await client.install(node, IMAGE)
    await client.reboot(node)
    assert await wait_until_back(client, node, before) != before
    assert (await client.version(node)).tag == OLD


async def test_slow_reboot_takes_longer(simulator: Simulator, client: TalosClient) -> None:
    node = routed(simulator, "w-slow")
    before = await client.boot_id(node)
    await client.reboot(node)
    started = time.monotonic()
    await wait_until_back(client, node, before)
    assert time.monotonic() - started >= 1.4


async def test_unavailable_burst_is_transient_then_clears(
    simulator: Simulator, client: TalosClient
) -> None:
    node = routed(simulator, "w-flaky")
    for _ in range(2):
        with pytest.raises(OsApiError) as failed:
            await client.version(node)
        assert failed.value.transient
    assert (await client.version(node)).tag == OLD


async def test_rollback_returns_to_the_previous_version(
    simulator: Simulator, client: TalosClient
) -> None:
    node = routed(simulator, "w-ok")
    before = await client.boot_id(node)
    await client.install(node, IMAGE)
    await client.reboot(node)
    middle = await wait_until_back(client, node, before)
    assert (await client.version(node)).tag == NEW
    await client.rollback(node)
    await wait_until_back(client, node, middle)
    assert (await client.version(node)).tag == OLD


async def test_rollback_without_a_previous_os_fails_permanently(
    simulator: Simulator, client: TalosClient
) -> None:
    with pytest.raises(OsApiError) as failed:
        await client.rollback(routed(simulator, "w-ok"))
    assert failed.value.code == "FAILED_PRECONDITION"


async def test_apply_configuration_modes(simulator: Simulator, client: TalosClient) -> None:
    node = routed(simulator, "w-ok")
    live = b"machine:\n  type: worker\n  sysctls:\n    net.core.somaxconn: '65535'\n"
    dry = await client.apply_configuration(node, live, "NoReboot", dry_run=True)
    assert dry.details.startswith("Dry run")
    assert b"somaxconn" not in await client.read_file(node, CONFIG_PATH)
    applied = await client.apply_configuration(node, live, "NoReboot")
    assert applied.mode == "NoReboot" and "without a reboot" in applied.details
    assert b"somaxconn" in await client.read_file(node, CONFIG_PATH)

    # Talos applies machine.install and machine.kernel at once, and refuses machine.env so
    install = live + b"  install:\n    image: ghcr.io/siderolabs/installer:v1.13.9\n"
    assert (await client.apply_configuration(node, install, "NoReboot")).mode == "NoReboot"
    needs_reboot = install + b"  env:\n    HTTP_PROXY: http://proxy:3128\n"
    with pytest.raises(OsApiError) as refused:
        await client.apply_configuration(node, needs_reboot, "NoReboot")
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "this config change can't be applied in immediate mode" in str(refused.value)
    auto = await client.apply_configuration(node, needs_reboot, "Auto", dry_run=True)
    assert auto.mode == "Reboot", "AUTO comes back resolved"
    auto = await client.apply_configuration(node, install, "Auto", dry_run=True)
    assert auto.mode == "NoReboot"

    staged = await client.apply_configuration(node, needs_reboot, "Staged")
    assert "next reboot" in staged.details
    tried = await client.apply_configuration(
        node, live + b"  time: {}\n", "Try", try_timeout=datetime.timedelta(seconds=30)
    )
    assert tried.mode == "Try"


async def test_rejected_configuration_carries_the_nodes_message(
    simulator: Simulator, client: TalosClient
) -> None:
    with pytest.raises(OsApiError) as rejected:
        await client.apply_configuration(routed(simulator, "w-rejects"), b"machine: {}\n", "Auto")
    assert rejected.value.code == "INVALID_ARGUMENT"
    assert "machine.network: bad interface" in str(rejected.value)


async def test_etcd_calls(simulator: Simulator, client: TalosClient) -> None:
    cp1 = routed(simulator, "cp-1")
    members = await client.etcd_members(cp1)
    assert sorted(m.hostname for m in members) == ["cp-1", "cp-2", "cp-3"]
    status = await client.etcd_status(cp1)
    assert status.healthy and status.leader == status.member_id
    assert not (await client.etcd_status(routed(simulator, "cp-3"))).healthy
    successor = await client.etcd_forfeit_leadership(cp1)
    assert successor in ("cp-2", "cp-3")
    assert (await client.etcd_status(cp1)).leader != status.member_id
    assert await client.etcd_forfeit_leadership(cp1) == "", "not the leader: nothing moves"
    with pytest.raises(OsApiError, match="only available on control plane nodes") as worker:
        await client.etcd_status(routed(simulator, "w-ok"))
    assert worker.value.code == "UNIMPLEMENTED"


async def test_a_reader_certificate_cannot_upgrade(simulator: Simulator, tmp_path: Path) -> None:
    path = simulator.write_talosconfig(tmp_path / "reader", roles=("os:reader",))
    reader = TalosClient(FileSource(path), timeout_s=3)
    try:
        node = routed(simulator, "w-ok")
        assert (await reader.version(node)).tag == OLD
        for call in (
            reader.install(node, IMAGE),
            reader.install(node, IMAGE, api="Legacy"),
            reader.reboot(node),
            reader.boot_id(node),
        ):
            with pytest.raises(OsApiError) as denied:
                await call
            assert denied.value.code == "PERMISSION_DENIED" and not denied.value.transient
            assert "os:admin" in str(denied.value)
    finally:
        await reader.close()
    assert simulator.fleet.count("machine.MachineService/Upgrade", "w-ok") == 0


async def test_expired_certificate_is_replaced_by_the_rotated_one_mid_run(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = simulator.write_talosconfig(tmp_path / "tc", validity=datetime.timedelta(seconds=2))
    api = TalosClient(FileSource(path), timeout_s=3)
    try:
        node = routed(simulator, "w-ok")
        assert (await api.version(node)).tag == OLD
        await asyncio.sleep(2.2)
        with pytest.raises(OsApiError) as expired:
            await api.version(node)
        assert expired.value.kind is ErrorKind.CREDENTIALS
        simulator.write_talosconfig(path)  # what Talos does when it renews the Secret
        assert (await api.version(node)).tag == OLD
    finally:
        await api.close()


async def test_secret_source_reloads_on_credential_failure(simulator: Simulator) -> None:
    state = {"version": "1", "value": simulator.talosconfig(validity=datetime.timedelta(seconds=2))}

    async def fetch() -> tuple[str, bytes]:
        return state["version"], state["value"].encode()

    api = TalosClient(SecretSource(fetch, "secret nodeos/tc", recheck_s=3600), timeout_s=3)
    try:
        node = routed(simulator, "w-ok")
        assert await api.hostname(node) == "w-ok"
        await asyncio.sleep(2.2)
        state.update(version="2", value=simulator.talosconfig())
        assert await api.hostname(node) == "w-ok", "a credentials failure forces a re-fetch"
    finally:
        await api.close()


async def test_wrong_ca_is_one_clear_credentials_error(
    simulator: Simulator, tmp_path: Path
) -> None:
    other = Simulator(Fleet([]))
    document = yaml.safe_load(simulator.talosconfig())
    document["contexts"]["simulator"]["ca"] = base64.b64encode(other.ca.cert_pem).decode()
    path = tmp_path / "wrong-ca"
    path.write_text(yaml.safe_dump(document))
    api = TalosClient(FileSource(path), timeout_s=3)
    try:
        with pytest.raises(OsApiError) as failed:
            await api.version(routed(simulator, "w-ok"))
    finally:
        await api.close()
    assert failed.value.kind is ErrorKind.CREDENTIALS
    assert "not signed by the talosconfig's CA" in str(failed.value)


async def test_unreachable_endpoint_is_transient_and_named(
    tmp_path: Path, talosconfig: Path
) -> None:
    api = TalosClient(FileSource(talosconfig), timeout_s=2)
    try:
        with pytest.raises(OsApiError) as failed:
            await api.version(NodeTarget(name="ghost", endpoint="127.0.0.1:1"))
    finally:
        await api.close()
    assert failed.value.transient
    assert (
        str(failed.value)
        == "ghost: 127.0.0.1:1 refused the connection (expected while the node reboots)"
    )


def move_endpoints(path: Path, endpoints: list[str]) -> list[str]:
    """Rewrites the talosconfig's endpoints; returns the ones it had."""
    document = yaml.safe_load(path.read_text())
    context = document["contexts"][document["context"]]
    before = list(context["endpoints"])
    context["endpoints"] = endpoints
    path.write_text(yaml.safe_dump(document))
    return before


async def test_an_endpoint_moved_in_the_talosconfig_is_used_without_a_restart(
    simulator: Simulator, talosconfig: Path
) -> None:
    """The file is re-read when it changes, endpoints included (not only certificates)."""
    serving = move_endpoints(talosconfig, ["127.0.0.1:1"])  # where the API used to be
    source = FileSource(talosconfig)
    await source.load()  # as the operator does at start-up
    routing = Routing("ControlPlane", (), 50000, source.endpoints)
    node = NodeView("w-ok", {}, ready=True, unschedulable=False, cordoned_by=None, os_image="")
    api = TalosClient(source, timeout_s=2)
    try:
        with pytest.raises(OsApiError) as failed:
            await api.version(routing.target(node))
        assert "127.0.0.1:1" in str(failed.value)
        move_endpoints(talosconfig, serving)
        answers: list[str] = []
        for _ in range(2):  # the call that finds the file changed may still dial the old one
            with contextlib.suppress(OsApiError):
                answers.append((await api.version(routing.target(node))).tag)
        assert answers in ([OLD], [OLD, OLD])
        assert routing.target(node).endpoint == serving[0]
    finally:
        await api.close()


async def test_unknown_node_is_permanent(simulator: Simulator, client: TalosClient) -> None:
    with pytest.raises(OsApiError) as failed:
        await client.version(routed(simulator, "nope"))
    assert failed.value.code == "NOT_FOUND"


async def test_errors_never_contain_key_material(simulator: Simulator, tmp_path: Path) -> None:
    path = simulator.write_talosconfig(tmp_path / "tc", validity=datetime.timedelta(seconds=1))
    document = yaml.safe_load(path.read_text())["contexts"]["simulator"]
    secrets = [document["key"], base64.b64decode(document["key"]).decode()]
    await asyncio.sleep(1.2)
    api = TalosClient(FileSource(path), timeout_s=2)
    messages = []
    try:
        for call in (
            api.version(routed(simulator, "w-ok")),
            api.version(NodeTarget("x", "127.0.0.1:1")),
        ):
            with pytest.raises(OsApiError) as failed:
                await call
            messages.append(str(failed.value) + repr(failed.value))
    finally:
        await api.close()
    for message in messages:
        for secret in secrets:
            assert secret[40:80] not in message


def test_malformed_talosconfigs_name_what_is_wrong(talosconfig: Path) -> None:
    good = yaml.safe_load(talosconfig.read_text())
    context = good["contexts"]["simulator"]

    def broken(**changes: object) -> str:
        entry = {**context, **changes}
        return yaml.safe_dump({"context": "simulator", "contexts": {"simulator": entry}})

    from nodeos.adapters.osapi.talosconfig import parse

    cases = {
        "contexts: [": "not valid YAML",
        yaml.safe_dump(
            {"context": "x", "contexts": {"simulator": context}}
        ): "context 'x' not found",
        yaml.safe_dump({"context": "simulator"}): "'contexts' is missing",
        broken(key=None): "contexts.simulator.key is missing",
        broken(crt="%%%"): "contexts.simulator.crt is not valid base64",
        broken(
            ca=base64.b64encode(b"hello").decode()
        ): "contexts.simulator.ca does not decode to PEM",
        broken(endpoints=[]): "contexts.simulator.endpoints: at least one endpoint is required",
        broken(
            key=yaml.safe_load(Simulator(Fleet([])).talosconfig())["contexts"]["simulator"]["key"]
        ): ("contexts.simulator.key does not belong to the certificate"),
    }
    for text, message in cases.items():
        with pytest.raises(TalosConfigError) as failed:
            parse(text)
        assert message in str(failed.value)
        assert context["key"][:40] not in str(failed.value)
    assert parse(talosconfig.read_text()).roles == ("os:admin",)


async def test_missing_talosconfig_file_is_named(tmp_path: Path) -> None:
    """A call through an unusable talosconfig fails like any call (an OsApiError the engine
    turns into a node result), with the file named."""
    api = TalosClient(FileSource(tmp_path / "absent"), timeout_s=1)
    with pytest.raises(OsApiError, match="absent: cannot read") as failed:
        await api.version(NodeTarget("n", "127.0.0.1:1"))
    assert failed.value.kind is ErrorKind.CREDENTIALS


async def raw_machine(client: TalosClient, simulator: Simulator) -> Any:
    """A MachineService stub on the client's own mTLS channel, for hand-made metadata."""
    channel = await client._channel(NodeTarget("any", simulator.endpoint), force_reload=False)
    return machine_pb2_grpc.MachineServiceStub(channel), channel


async def test_routing_metadata_is_read_as_apid_reads_it(
    simulator: Simulator, client: TalosClient
) -> None:
    stub, channel = await raw_machine(client, simulator)
    # "nodes" with one node is served by that node (never the endpoint's own), hostname set
    reply = await stub.Hostname(empty_pb2.Empty(), metadata=(("nodes", "w-ok"),))
    assert reply.messages[0].hostname == "w-ok"
    assert reply.messages[0].metadata.hostname == "w-ok"
    # "node" (one-to-one): the reply carries no metadata
    reply = await stub.Hostname(empty_pb2.Empty(), metadata=(("node", "w-slow"),))
    assert reply.messages[0].hostname == "w-slow"
    assert not reply.messages[0].HasField("metadata")
    # a multi-valued "node" is refused
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Hostname(empty_pb2.Empty(), metadata=(("node", "w-ok"), ("node", "w-slow")))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "single-valued" in str(refused.value.details())
    # ImageService does not fan out
    images = image_pb2_grpc.ImageServiceStub(channel)
    request = image_pb2.ImageServicePullRequest(image_ref=IMAGE)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in images.Pull(request, metadata=(("nodes", "w-ok"),)):
            pass
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # a Reboot with "nodes" reboots that node and no other
    boots = {n.name: n.boot_id for n in simulator.fleet.nodes.values()}
    await stub.Reboot(machine_pb2.RebootRequest(), metadata=(("nodes", "w-slow"),))
    await wait_for(lambda: simulator.fleet.nodes["w-slow"].boot_id != boots["w-slow"], 10)
    assert simulator.fleet.nodes["cp-1"].boot_id == boots["cp-1"]


async def test_an_upgrade_needs_the_image_pulled_into_the_same_containerd(
    simulator: Simulator, client: TalosClient
) -> None:
    channel = await client._channel(NodeTarget("any", simulator.endpoint), force_reload=False)
    lifecycle = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
    request = lifecycle_pb2.LifecycleServiceUpgradeRequest(
        containerd=common_pb2.ContainerdInstance(
            driver=common_pb2.CONTAINERD, namespace=common_pb2.NS_SYSTEM
        ),
        source=lifecycle_pb2.InstallArtifactsSource(image_name=IMAGE),
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        async for _ in lifecycle.Upgrade(request, metadata=(("node", "w-ok"),)):
            pass
    assert missing.value.code() is grpc.StatusCode.INTERNAL
    assert "not found in containerd store" in str(missing.value.details())
    # the client pulls and installs in the CRI containerd by default, as talosctl does
    outcome = await client.install(routed(simulator, "w-ok"), IMAGE)
    assert outcome.api == "Lifecycle"
    assert simulator.fleet.nodes["w-ok"].pulled == {"CRI/NS_CRI": {IMAGE}}


async def test_a_client_fails_over_between_talosconfig_endpoints(
    simulator: Simulator, tmp_path: Path
) -> None:
    # As talosctl: the talosconfig lists several endpoints (here a dead one first, then two
    # control planes' own addresses); a call that cannot reach one goes through the next.
    cp = {name: simulator.fleet.nodes[name].address for name in ("cp-1", "cp-2")}
    endpoints = ["127.0.0.1:1", *(f"{address}:{simulator.port}" for address in cp.values())]
    path = simulator.write_talosconfig(tmp_path / "multi", endpoints=endpoints)
    source = FileSource(path)
    api = TalosClient(source, timeout_s=3)
    try:
        await source.load()
        routing = Routing("ControlPlane", live=source.endpoints)
        node = NodeView(
            name="w-ok",
            labels={},
            ready=True,
            unschedulable=False,
            cordoned_by=None,
            os_image="",
            address="w-ok",
        )
        target = routing.target(node)
        assert (target.endpoint, target.fallbacks) == (endpoints[0], tuple(endpoints[1:]))
        assert (await api.version(target)).tag == OLD
        calls = [c for c in simulator.fleet.calls if c.method.endswith("/Version")]
        assert [c.node for c in calls] == ["w-ok"], "delivered once, through a live endpoint"
        # cp-1 reboots: its apid is down with it, so calls go through cp-2
        simulator.fleet.nodes["cp-1"].reboot(simulator.fleet.clock())
        await wait_for(lambda: simulator.fleet.nodes["cp-1"].power is Power.REBOOTING, 5)
        assert (await api.hostname(target)) == "w-ok"
    finally:
        await api.close()
