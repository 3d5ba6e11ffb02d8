"""StatusStore: guarded writes, batching of concurrent changes, re-apply after a conflict."""

from __future__ import annotations

import asyncio

from helpers.fakes import FakeKube
from nodeos.engine.status import Draft, StatusStore
from nodeos.models.upgradeplan import NodeProgress


def plan() -> dict[str, object]:
    return {"metadata": {"name": "p", "generation": 1}, "spec": {"target": {"version": "v1.13.9"}}}


def claim(name: str):  # type: ignore[no-untyped-def]
    def mutate(draft: Draft) -> None:
        draft.in_flight.append(name)
        draft.nodes[name] = NodeProgress(name=name, phase="Cordoning")

    return mutate


async def test_concurrent_changes_share_writes_and_each_is_stored_before_commit_returns() -> None:
    kube = FakeKube({}, plan())
    store = StatusStore(kube, "p")
    await store.load()
    results = await asyncio.gather(*(store.commit(claim(f"n-{i}")) for i in range(20)))
    for i, status in enumerate(results):
        assert f"n-{i}" in status.in_flight, "returned only once its own change was stored"
    assert sorted(kube.plan["status"]["inFlight"]) == sorted(f"n-{i}" for i in range(20))
    assert 1 <= store.writes < 20, f"{store.writes} writes for 20 concurrent changes"


async def test_a_conflict_rereads_and_reapplies_the_change() -> None:
    kube = FakeKube({}, plan())
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    kube.version += 1  # someone edited the plan meanwhile
    status = await store.commit(claim("b"))
    assert status.in_flight == ["a", "b"]
    assert kube.plan["status"]["inFlight"] == ["a", "b"]


async def test_an_unchanged_status_is_not_written() -> None:
    kube = FakeKube({}, plan())
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    writes = store.writes
    await store.commit(lambda draft: None)
    assert store.writes == writes
