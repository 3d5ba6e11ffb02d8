"""One drain round against a scripted Kubernetes: its two reads describe one moment (bind race)."""

from __future__ import annotations

from typing import Any

from nodeos.engine.drain import drain_round
from nodeos.models.rollout import DrainPolicy
from nodeos.ports.kube import Eviction, EvictionOutcome, PodListing, PodView


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
    """Answers pods_on from a script, one listing per call, and records every call."""

    def __init__(self, listings: list[list[PodView]], binds_pending: bool) -> None:
        self.listings = listings
        self.pending = binds_pending
        self.calls: list[str] = []

    async def pods_on(self, node: str) -> PodListing:
        self.calls.append("pods_on")
        return PodListing(self.listings.pop(0), version=str(100 + len(self.calls)))

    async def binds_pending(self, version: str) -> bool:
        self.calls.append(f"binds_pending at {version}")
        return self.pending

    async def evict(self, pod: PodView, grace_seconds: int | None) -> EvictionOutcome:
        self.calls.append(f"evict {pod.name}")
        return EvictionOutcome(Eviction.EVICTED)


async def run(kube: ScriptedKube) -> Any:
    return await drain_round(kube, "worker-1", DrainPolicy(), force=False, own_pod=None)  # type: ignore[arg-type]


async def test_an_empty_node_asks_for_pods_to_bind_as_of_its_listing() -> None:
    kube = ScriptedKube([[]], binds_pending=False)
    outcome = await run(kube)
    # the same moment as the listing: a pod bound since would be on neither read otherwise
    assert kube.calls == ["pods_on", "binds_pending at 101"]
    assert (outcome.remaining, outcome.binds_pending) == (0, False)


async def test_an_empty_node_reports_whether_the_scheduler_had_pods_to_bind() -> None:
    for pending in (True, False):
        kube = ScriptedKube([[]], binds_pending=pending)
        outcome = await run(kube)
        assert (outcome.remaining, outcome.binds_pending) == (0, pending)


async def test_a_node_with_pods_costs_no_extra_reads() -> None:
    kube = ScriptedKube([[pod("a")]], binds_pending=True)
    outcome = await run(kube)
    assert kube.calls == ["pods_on", "evict a"]
    assert outcome.remaining == 1
