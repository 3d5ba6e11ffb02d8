"""When etcd is not safe to disturb, from what its members report. Pure.

A control-plane node is taken out only when every member has started (none is a learner),
every member runs on a known control-plane node, the cluster does not have exactly two members
(losing one of two loses quorum), and every member reports a leader and no errors.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from nodeos.ports.osapi import EtcdMember, EtcdMemberStatus


def membership_problem(
    members: Sequence[EtcdMember], control_planes: Collection[str]
) -> str | None:
    """Why the membership itself forbids taking a member out, or None."""
    if len(members) == 2:
        return "etcd has 2 members; losing one loses quorum"
    for member in members:
        if member.is_learner:
            return f"etcd member {member.hostname} is a learner"
        if member.hostname not in control_planes:
            return f"etcd member {member.hostname} has no matching control-plane node"
    return None


def member_problem(member: EtcdMember, status: EtcdMemberStatus) -> str | None:
    """Why this member is unhealthy, or None."""
    if status.healthy:
        return None
    errors = ", ".join(status.errors) or "no leader"
    return f"etcd member {member.hostname} is unhealthy: {errors}"
