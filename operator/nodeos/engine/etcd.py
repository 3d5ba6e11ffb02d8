"""The etcd gate before a control-plane node: every member started, healthy, not a learner."""

from __future__ import annotations

from collections.abc import Callable

from nodeos.core.nodes import NodeView
from nodeos.ports.osapi import NodeTarget, OsApi, OsApiError


async def etcd_problem(
    osapi: OsApi, control_planes: list[NodeView], target: Callable[[NodeView], NodeTarget]
) -> str | None:
    """Why etcd is not safe to disturb, or None when every member is healthy."""
    if not control_planes:
        return None
    by_name = {node.name: node for node in control_planes}
    members = None
    for node in control_planes:
        try:
            members = await osapi.etcd_members(target(node))
            break
        except OsApiError:
            continue
    if members is None:
        return "no control-plane node answered EtcdMemberList"
    if len(members) == 2:
        return "etcd has 2 members; losing one loses quorum"
    for member in members:
        if member.is_learner:
            return f"etcd member {member.hostname} is a learner"
        member_node = by_name.get(member.hostname)
        if member_node is None:
            return f"etcd member {member.hostname} has no matching control-plane node"
        try:
            status = await osapi.etcd_status(target(member_node))
        except OsApiError as error:
            return f"etcd member {member.hostname} did not answer: {error.detail}"
        if not status.healthy:
            errors = ", ".join(status.errors) or "no leader"
            return f"etcd member {member.hostname} is unhealthy: {errors}"
    return None
