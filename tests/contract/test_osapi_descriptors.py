"""Our .proto descriptors match the Talos machine API on the wire.

The expectations below are transcribed from the Talos sources (api/common, api/machine) as
recorded in the project's research notes: service full names, method paths and streaming, and
the field numbers and types of every request and reply message nodeos sends or reads.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor
from google.protobuf.descriptor import FieldDescriptor as F

from nodeos.osapi.v1 import common_pb2, image_pb2, lifecycle_pb2, machine_pb2

METHODS = {
    # path: (request type, response type, server-streaming)
    "/machine.MachineService/Version": ("google.protobuf.Empty", "machine.VersionResponse", False),
    "/machine.MachineService/Hostname": (
        "google.protobuf.Empty",
        "machine.HostnameResponse",
        False,
    ),
    "/machine.MachineService/ServiceList": (
        "google.protobuf.Empty",
        "machine.ServiceListResponse",
        False,
    ),
    "/machine.MachineService/Upgrade": ("machine.UpgradeRequest", "machine.UpgradeResponse", False),
    "/machine.MachineService/Reboot": ("machine.RebootRequest", "machine.RebootResponse", False),
    "/machine.MachineService/Rollback": (
        "machine.RollbackRequest",
        "machine.RollbackResponse",
        False,
    ),
    "/machine.MachineService/ApplyConfiguration": (
        "machine.ApplyConfigurationRequest",
        "machine.ApplyConfigurationResponse",
        False,
    ),
    "/machine.MachineService/EtcdMemberList": (
        "machine.EtcdMemberListRequest",
        "machine.EtcdMemberListResponse",
        False,
    ),
    "/machine.MachineService/EtcdStatus": (
        "google.protobuf.Empty",
        "machine.EtcdStatusResponse",
        False,
    ),
    "/machine.MachineService/EtcdForfeitLeadership": (
        "machine.EtcdForfeitLeadershipRequest",
        "machine.EtcdForfeitLeadershipResponse",
        False,
    ),
    "/machine.MachineService/Read": ("machine.ReadRequest", "common.Data", True),
    "/machine.LifecycleService/Upgrade": (
        "machine.LifecycleServiceUpgradeRequest",
        "machine.LifecycleServiceUpgradeResponse",
        True,
    ),
    "/machine.ImageService/Pull": (
        "machine.ImageServicePullRequest",
        "machine.ImageServicePullResponse",
        True,
    ),
}

S, B, U64, I64, I32, E, M = (
    F.TYPE_STRING,
    F.TYPE_BOOL,
    F.TYPE_UINT64,
    F.TYPE_INT64,
    F.TYPE_INT32,
    F.TYPE_ENUM,
    F.TYPE_MESSAGE,
)
BYTES = F.TYPE_BYTES

FIELDS = {
    "common.Metadata": {"hostname": (1, S), "error": (2, S)},
    "common.Data": {"metadata": (1, M), "bytes": (2, BYTES)},
    "common.ContainerdInstance": {"driver": (1, E), "namespace": (2, E)},
    "machine.Version": {
        "metadata": (1, M),
        "version": (2, M),
        "platform": (3, M),
        "features": (4, M),
    },
    "machine.VersionInfo": {
        "tag": (1, S),
        "sha": (2, S),
        "built": (3, S),
        "go_version": (4, S),
        "os": (5, S),
        "arch": (6, S),
    },
    "machine.Hostname": {"metadata": (1, M), "hostname": (2, S)},
    "machine.ServiceInfo": {"id": (1, S), "state": (2, S), "events": (3, M), "health": (4, M)},
    "machine.ServiceHealth": {
        "unknown": (1, B),
        "healthy": (2, B),
        "last_message": (3, S),
        "last_change": (4, M),
    },
    "machine.UpgradeRequest": {
        "image": (1, S),
        "preserve": (2, B),
        "stage": (3, B),
        "force": (4, B),
        "reboot_mode": (5, E),
    },
    "machine.Upgrade": {"metadata": (1, M), "ack": (2, S), "actor_id": (3, S)},
    "machine.RebootRequest": {"mode": (1, E)},
    "machine.Reboot": {"metadata": (1, M), "actor_id": (2, S)},
    "machine.Rollback": {"metadata": (1, M)},
    "machine.ApplyConfigurationRequest": {
        "data": (1, BYTES),
        "mode": (4, E),
        "dry_run": (5, B),
        "try_mode_timeout": (6, M),
    },
    "machine.ApplyConfiguration": {
        "metadata": (1, M),
        "warnings": (2, S),
        "mode": (3, E),
        "mode_details": (4, S),
    },
    "machine.EtcdMemberListRequest": {"query_local": (1, B)},
    "machine.EtcdMembers": {"metadata": (1, M), "legacy_members": (2, S), "members": (3, M)},
    "machine.EtcdMember": {
        "id": (2, U64),
        "hostname": (3, S),
        "peer_urls": (4, S),
        "client_urls": (5, S),
        "is_learner": (6, B),
    },
    "machine.EtcdStatus": {"metadata": (1, M), "member_status": (2, M)},
    "machine.EtcdMemberStatus": {
        "protocol_version": (1, S),
        "db_size": (2, I64),
        "db_size_in_use": (3, I64),
        "leader": (4, U64),
        "raft_index": (5, U64),
        "raft_term": (6, U64),
        "raft_applied_index": (7, U64),
        "errors": (8, S),
        "is_learner": (9, B),
        "member_id": (10, U64),
        "storage_version": (11, S),
    },
    "machine.EtcdForfeitLeadership": {"metadata": (1, M), "member": (2, S)},
    "machine.ReadRequest": {"path": (1, S)},
    "machine.LifecycleServiceUpgradeRequest": {"containerd": (1, M), "source": (2, M)},
    "machine.InstallArtifactsSource": {"image_name": (1, S)},
    "machine.LifecycleServiceUpgradeResponse": {"progress": (1, M)},
    "machine.LifecycleServiceInstallProgress": {"message": (1, S), "exit_code": (2, I32)},
    "machine.ImageServicePullRequest": {"containerd": (1, M), "image_ref": (3, S)},
    "machine.ImageServicePullResponse": {"name": (1, S), "pull_progress": (2, M)},
}

ENUMS = {
    "machine.UpgradeRequest.RebootMode": {"DEFAULT": 0, "POWERCYCLE": 1},
    "machine.RebootRequest.Mode": {"DEFAULT": 0, "POWERCYCLE": 1, "FORCE": 2},
    "machine.ApplyConfigurationRequest.Mode": {
        "REBOOT": 0,
        "AUTO": 1,
        "NO_REBOOT": 2,
        "STAGED": 3,
        "TRY": 4,
    },
    "common.ContainerDriver": {"CONTAINERD": 0, "CRI": 1},
    "common.ContainerdNamespace": {"NS_UNKNOWN": 0, "NS_SYSTEM": 1, "NS_CRI": 2},
}

FILES = (
    common_pb2.DESCRIPTOR,
    machine_pb2.DESCRIPTOR,
    lifecycle_pb2.DESCRIPTOR,
    image_pb2.DESCRIPTOR,
)


def all_methods() -> dict[str, descriptor.MethodDescriptor]:
    found = {}
    for file in FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                found[f"/{service.full_name}/{method.name}"] = method
    return found


def message(full_name: str) -> descriptor.Descriptor:
    for file in FILES:
        package, _, name = full_name.partition(".")
        if file.package != package:
            continue
        parts = name.split(".")
        found = file.message_types_by_name.get(parts[0])
        for part in parts[1:]:
            found = found.nested_types_by_name[part] if found else None
        if found is not None:
            return found
    raise KeyError(full_name)


def test_every_method_path_exists_with_its_types_and_streaming() -> None:
    methods = all_methods()
    assert set(METHODS) <= set(methods)
    for path, (request, response, streaming) in METHODS.items():
        method = methods[path]
        assert method.input_type.full_name == request, path
        assert method.output_type.full_name == response, path
        assert method.server_streaming is streaming, path
        assert method.client_streaming is False, path


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_field_numbers_and_types_match_talos(name: str) -> None:
    fields = message(name).fields_by_name
    for field_name, (number, kind) in FIELDS[name].items():
        assert field_name in fields, f"{name}.{field_name} is missing"
        assert fields[field_name].number == number, f"{name}.{field_name}"
        assert fields[field_name].type == kind, f"{name}.{field_name}"


def test_reply_envelopes_carry_messages_at_field_1() -> None:
    for _, (_, response, streaming) in METHODS.items():
        if streaming:
            continue
        messages = message(response).fields_by_name["messages"]
        assert messages.number == 1
        assert messages.is_repeated
        assert messages.message_type.fields_by_name["metadata"].number == 1


def test_oneofs_match_talos() -> None:
    progress = message("machine.LifecycleServiceInstallProgress")
    assert [f.name for f in progress.oneofs_by_name["response"].fields] == ["message", "exit_code"]
    pull = message("machine.ImageServicePullResponse")
    assert [f.name for f in pull.oneofs_by_name["response"].fields] == ["name", "pull_progress"]
    assert 2 not in {f.number for f in message("machine.ImageServicePullRequest").fields}


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_values_match_talos(name: str) -> None:
    package, _, rest = name.partition(".")
    *outer, enum_name = rest.split(".")
    if outer:
        enum = message(f"{package}.{'.'.join(outer)}").enum_types_by_name[enum_name]
    else:
        enum = next(
            f.enum_types_by_name[enum_name] for f in FILES if enum_name in f.enum_types_by_name
        )
    assert {v.name: v.number for v in enum.values} == ENUMS[name]
