"""One drain round: evict every pod that should leave the node, report what is left.

A round that finds nothing to move also says whether the scheduler still had pods to bind: one
it placed on the node just before the cordon may yet land there. Both answers come from the same
moment (the pending pods are read at the listing's resourceVersion), so such a pod is either
listed or seen waiting: two reads, where reading "now" would need a third.

Which pods must leave is ``core.pods.must_leave``. Evictions go through the Eviction API, so
PodDisruptionBudgets decide; a forced round deletes what eviction could not move.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeos.core.pods import must_leave
from nodeos.models.common import parse_duration
from nodeos.models.rollout import DrainPolicy
from nodeos.ports.kube import Eviction, KubeApi, KubeApiError


@dataclass(frozen=True)
class DrainRound:
    """What one round achieved."""

    remaining: int
    blocked_by: tuple[str, ...]
    binds_pending: bool = False  # found the node empty while the scheduler had pods to bind

    @property
    def message(self) -> str:
        """A short account of what blocks the drain."""
        return "; ".join(self.blocked_by[:3]) or "waiting for evicted pods to terminate"


async def drain_round(
    kube: KubeApi,
    node: str,
    policy: DrainPolicy,
    *,
    force: bool,
    own_pod: tuple[str, str] | None,
) -> DrainRound:
    """Evicts (or, forced, deletes) what must leave; returns how many pods are still there."""
    grace = (
        int(parse_duration(policy.grace_period).total_seconds()) if policy.grace_period else None
    )

    listing = await kube.pods_on(node)
    pods = [pod for pod in listing.pods if must_leave(pod, policy, own_pod)]
    if not pods:
        # At the listing's version, a pod the scheduler placed here before the cordon is
        # either bound (and listed) or still waiting to be bound (pending).
        binds_pending = await kube.binds_pending(listing.version)
        return DrainRound(remaining=0, blocked_by=(), binds_pending=binds_pending)
    blocked: list[str] = []
    for pod in pods:
        if pod.terminating:
            continue
        if pod.empty_dir and not policy.delete_empty_dir_data and not force:
            blocked.append(f"{pod.namespace}/{pod.name} uses emptyDir (deleteEmptyDirData is off)")
            continue
        if force:
            await kube.delete_pod(pod, grace)
            continue
        try:
            outcome = await kube.evict(pod, grace)
        except KubeApiError as error:
            # e.g. 500 for a pod under two PodDisruptionBudgets: the pod stays, and the drain's
            # deadline and onTimeout decide, as for a budget that refuses.
            blocked.append(f"{pod.namespace}/{pod.name}: eviction failed: {error}")
            continue
        if outcome.result is Eviction.BLOCKED:
            blocked.append(f"{pod.namespace}/{pod.name}: {outcome.message}")
    return DrainRound(remaining=len(pods), blocked_by=tuple(blocked))
