"""The official Talos client library against our descriptors and our simulator.

``talos-interop`` is a small Go program built (like the sandbox) against
``github.com/siderolabs/talos/pkg/machinery`` v1.13.0, and again against v1.12.0, which has
only the legacy upgrade path. It diffs the descriptors nodeos ships against machinery's
(every field number, type, label, type name and oneof, enum value and method path and
streaming kind) and drives the simulator with ``client.WithNode`` and ``client.WithNodes``
through Version, Hostname, ServiceList, the etcd calls, ApplyConfiguration in each mode, Read,
both upgrade paths and Reboot, checking the answers a real node gives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

from nodeos.osapi.v1 import common_pb2, image_pb2, lifecycle_pb2, machine_pb2
from nodeos.simulator.server import NodeSpec, Simulator, build_fleet

OURS = (common_pb2, image_pb2, lifecycle_pb2, machine_pb2)
SINCE_1_13 = (image_pb2, lifecycle_pb2)  # ImageService and LifecycleService


def descriptor_set() -> bytes:
    """Our .proto files as a FileDescriptorSet (what protoc --descriptor_set_out writes)."""
    files = descriptor_pb2.FileDescriptorSet()
    for module in OURS:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.file.append(proto)
    return files.SerializeToString()


def names_in(module: ModuleType) -> set[str]:
    """The checks the program reports for a file's top-level messages and services."""
    file = module.DESCRIPTOR
    found = {f"message {m.full_name}" for m in file.message_types_by_name.values()}
    return found | {f"service {s.full_name}" for s in file.services_by_name.values()}


@pytest.mark.parametrize("binary", ["talos-interop", "talos-interop-1.12"])
async def test_the_official_talos_client_agrees_with_our_descriptors_and_simulator(
    binary: str, sandbox_binaries: dict[str, Path], tmp_path: Path, figures: list[str]
) -> None:
    legacy = binary.endswith("1.12")
    descriptors = tmp_path / "nodeos.pb"
    descriptors.write_bytes(descriptor_set())
    specs = [NodeSpec("cp-1", control_plane=True), NodeSpec("worker-1"), NodeSpec("worker-2")]
    simulator = Simulator(build_fleet(specs, "v1.12.4", 0.3))
    await simulator.start()
    try:
        talosconfig = simulator.write_talosconfig(tmp_path / "talosconfig")
        process = await asyncio.create_subprocess_exec(
            str(sandbox_binaries[binary]),
            f"--descriptors={descriptors}",
            f"--talosconfig={talosconfig}",
            "--control-plane=cp-1",
            "--worker=worker-1",
            "--legacy-worker=worker-2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 180)
    finally:
        await simulator.stop()
    lines = output.decode().splitlines()
    failures = [line for line in lines if not line.startswith("ok ")]
    passed = len(lines) - len(failures)
    if legacy:
        since = {name for m in SINCE_1_13 for name in names_in(m)}
        since.add("message common.ContainerdInstance")  # came with them in 1.13
        expected = {f"FAIL {name}: missing in machinery" for name in since}
        assert set(failures) == expected, "\n".join(lines)
    else:
        assert failures == [], "\n".join(failures)
        assert "ok LifecycleService.Upgrade (CRI) installs, exit code 0" in lines
    assert "ok legacy Upgrade: acked, node reboots on the new version" in lines
    assert "ok ApplyConfiguration AUTO (dry run) resolves to REBOOT" in lines
    figures.append(
        f"talos interop ({binary}): {passed} checks passed, {len(failures)} expected gaps"
    )
