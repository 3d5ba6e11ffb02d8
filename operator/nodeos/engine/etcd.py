"""The etcd gate before a control-plane node: asks the members, ``core.etcd`` judges."""

from __future__ import annotations

from collections.abc import Callable

from nodeos.core import etcd
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
    if (problem := etcd.membership_problem(members, by_name)) is not None:
        return problem
    for member in members:
        try:
            status = await osapi.etcd_status(target(by_name[member.hostname]))
        except OsApiError as error:
            return f"etcd member {member.hostname} did not answer: {error.detail}"
        if (problem := etcd.member_problem(member, status)) is not None:
            return problem
    return None
