"""One drain round against a scripted Kubernetes: the order of its reads closes the bind race."""

from __future__ import annotations

from typing import Any

from nodeos.engine.drain import drain_round
from nodeos.models.rollout import DrainPolicy
from nodeos.ports.kube import Eviction, EvictionOutcome, PodView


def pod(name: str) -> PodView:
    return PodView(
        namespace="w",
        name=name,
        daemon_set=False,
        mirror=False,
        terminating=False,
        finished=False,
        labels={},
        empty_dir=False,
    )


class ScriptedKube:
    """Answers pods_on from a script, one answer per call, and records every call."""

    def __init__(self, listings: list[list[PodView]], binds_pending: bool) -> None:
        self.listings = listings
        self.pending = binds_pending
        self.calls: list[str] = []

    async def pods_on(self, node: str) -> list[PodView]:
        self.calls.append("pods_on")
        return self.listings.pop(0)

    async def binds_pending(self) -> bool:
        self.calls.append("binds_pending")
        return self.pending

    async def evict(self, pod: PodView, grace_seconds: int | None) -> EvictionOutcome:
        self.calls.append(f"evict {pod.name}")
        return EvictionOutcome(Eviction.EVICTED)


async def run(kube: ScriptedKube) -> Any:
    return await drain_round(kube, "worker-1", DrainPolicy(), force=False, own_pod=None)  # type: ignore[arg-type]


async def test_a_pod_bound_between_the_reads_is_evicted_not_missed() -> None:
    kube = ScriptedKube([[], [pod("late")]], binds_pending=False)
    outcome = await run(kube)
    assert kube.calls == ["pods_on", "binds_pending", "pods_on", "evict late"]
    assert outcome.remaining == 1


async def test_an_empty_node_reports_whether_the_scheduler_had_pods_to_bind() -> None:
    for pending in (True, False):
        kube = ScriptedKube([[], []], binds_pending=pending)
        outcome = await run(kube)
        assert (outcome.remaining, outcome.binds_pending) == (0, pending)


async def test_a_node_with_pods_costs_no_extra_reads() -> None:
    kube = ScriptedKube([[pod("a")]], binds_pending=True)
    outcome = await run(kube)
    assert kube.calls == ["pods_on", "evict a"]
    assert outcome.remaining == 1
