"""StatusStore: guarded writes, batching, re-apply after a conflict, records on the Nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.fakes import FakeKube, FakeNode
from nodeos.core.records import annotation_key, encode
from nodeos.engine import status as status_module
from nodeos.engine.status import Draft, StatusStore
from nodeos.models.upgradeplan import NodeProgress
from nodeos.ports.kube import KubeApiError


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


def with_nodes(*names: str, status: dict[str, object] | None = None) -> FakeKube:
    body = plan()
    body["metadata"] = {"name": "p", "uid": "uid-1", "generation": 1}
    if status is not None:
        body["status"] = status
    return FakeKube({n: FakeNode(n) for n in names}, body)


async def test_records_live_on_their_nodes_and_a_transition_writes_only_its_own() -> None:
    kube = with_nodes("a", "b", "c")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    await store.commit(claim("b"))
    assert "nodes" not in kube.plan["status"], "the status holds no per-node records"
    assert kube.plan["status"]["inFlight"] == ["a", "b"]
    assert set(kube.records()) == {"a", "b"} and "c" not in kube.records()
    writes = store.record_writes

    def drain(draft: Draft) -> None:
        draft.nodes["a"] = NodeProgress(name="a", phase="Draining")

    await store.commit(drain)
    assert store.record_writes == writes + 1, "only the changed record is written"
    assert kube.records()["a"]["phase"] == "Draining"
    assert kube.records()["b"]["phase"] == "Cordoning"

    again = StatusStore(kube, "p")  # a restarted operator reads them back
    await again.load()
    assert again.summary == store.summary
    assert again.records == store.records


async def test_records_left_in_the_status_by_an_earlier_version_move_to_the_nodes() -> None:
    legacy = {
        "phase": "Progressing",
        "inFlight": ["a"],
        "nodes": [{"name": "a", "phase": "Draining"}, {"name": "b", "phase": "Done"}],
    }
    kube = with_nodes("a", "b", status=legacy)
    store = StatusStore(kube, "p")
    await store.load()
    assert {n: r.phase for n, r in store.records.items()} == {"a": "Draining", "b": "Done"}
    await store.commit(claim("c-missing"))  # any change: the next write moves them
    assert "nodes" not in kube.plan["status"]
    assert {n: r["phase"] for n, r in kube.records().items()} == {"a": "Draining", "b": "Done"}


async def test_a_record_of_another_plan_with_the_same_name_is_not_taken_up() -> None:
    kube = with_nodes("a")
    kube.nodes["a"].annotations[annotation_key("p")] = encode(
        NodeProgress(name="a", phase="Failed"), "uid-of-a-deleted-plan"
    )
    store = StatusStore(kube, "p")
    await store.load()
    assert store.records == {}


async def test_a_failed_record_write_keeps_the_stored_record_and_reports_the_error() -> None:
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    failing = kube.annotate_node

    async def refuse(node: str, key: str, value: str | None) -> None:
        raise KubeApiError(503, "unavailable")

    kube.annotate_node = refuse  # type: ignore[method-assign]

    def drain(draft: Draft) -> None:
        draft.nodes["a"] = NodeProgress(name="a", phase="Draining")

    with pytest.raises(KubeApiError):
        await store.commit(drain)
    assert store.records["a"].phase == "Cordoning", "memory says what is stored"
    kube.annotate_node = failing  # type: ignore[method-assign]
    await store.commit(drain)
    assert kube.records()["a"]["phase"] == "Draining"


@contextlib.contextmanager
def replies_lost(kube: FakeKube, method: str = "annotate_node") -> Iterator[None]:
    """The writes ``method`` makes (Node writes unless told) land, but their replies are lost."""
    stores = getattr(kube, method)

    async def lose_reply(*args: Any) -> Any:
        await stores(*args)
        raise KubeApiError(0, "connection reset after the request was sent")

    setattr(kube, method, lose_reply)
    try:
        yield
    finally:
        setattr(kube, method, stores)


async def test_a_record_whose_reply_was_lost_is_read_back_before_the_next_write() -> None:
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))

    def drain(draft: Draft) -> None:
        draft.nodes["a"] = NodeProgress(name="a", phase="Draining")

    with replies_lost(kube), pytest.raises(KubeApiError):
        await store.commit(drain)
    await store.commit(lambda draft: None)
    assert store.records["a"].phase == "Draining", "the next write starts from what the Node has"


async def test_a_status_whose_reply_was_lost_is_read_back_before_the_next_write() -> None:
    # The lost write gave a's slot back. A change that, applied to the copy in memory (which
    # still has a in flight), changes nothing must not be taken for stored: a is claimed
    # again, and the ledger must say so before a is cordoned.
    kube = with_nodes("a", "b")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("b"))
    await store.commit(claim("a"))

    def give_back(draft: Draft) -> None:
        draft.in_flight.remove("a")

    with replies_lost(kube, "patch_plan_status"), pytest.raises(KubeApiError):
        await store.commit(give_back)
    assert kube.plan["status"]["inFlight"] == ["b"]

    def give_back_and_claim_again(draft: Draft) -> None:
        if "a" in draft.in_flight:
            draft.in_flight.remove("a")
        draft.in_flight.append("a")

    status = await store.commit(give_back_and_claim_again)
    assert status.in_flight == ["b", "a"]
    assert kube.plan["status"]["inFlight"] == ["b", "a"], "stored, not only in memory"


def move(name: str, before: str, after: str):  # type: ignore[no-untyped-def]
    return becomes(before, NodeProgress(name=name, phase=after))


def becomes(before: str, record: NodeProgress):  # type: ignore[no-untyped-def]
    """The engine's transition: this very record, if the node's is still in ``before``."""

    def mutate(draft: Draft) -> None:
        if draft.nodes[record.name].phase == before:
            draft.nodes[record.name] = record

    return mutate


async def test_a_staged_change_is_seen_at_once_and_written_with_the_next_change() -> None:
    kube = with_nodes("a", "b")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    store.stage(move("a", "Cordoning", "Verifying"), NodeProgress(name="a", phase="Verifying"))
    staged = store.staged("a")
    assert staged is not None and staged.phase == "Verifying", "seen at once"
    assert kube.records()["a"]["phase"] == "Cordoning", "not written yet"
    await store.commit(claim("b"))  # another node's change leaves it staged
    assert kube.records()["a"]["phase"] == "Cordoning" and store.staged("a") is not None
    writes = store.record_writes
    await store.commit(move("a", "Verifying", "Done"), nodes=["a"])  # after the staged one
    assert kube.records()["a"]["phase"] == "Done"
    assert store.record_writes == writes + 1, "the staged change cost no write of its own"
    assert store.staged("a") is None


async def test_a_staged_change_alone_is_written_within_the_deferral(monkeypatch: Any) -> None:
    monkeypatch.setattr(status_module, "DEFER_S", 0.05)
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    store.stage(move("a", "Cordoning", "Verifying"), NodeProgress(name="a", phase="Verifying"))
    for _ in range(100):
        if kube.records()["a"]["phase"] == "Verifying":
            break
        await asyncio.sleep(0.01)
    assert kube.records()["a"]["phase"] == "Verifying"
    assert store.staged("a") is None
    await store.close()


async def test_a_restart_forgets_what_was_staged_and_a_reload_keeps_it() -> None:
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    store.stage(move("a", "Cordoning", "Verifying"), NodeProgress(name="a", phase="Verifying"))
    await store.load()  # after an error, in the same engine: its workers still run on it
    staged = store.staged("a")
    assert staged is not None and staged.phase == "Verifying"
    restarted = StatusStore(kube, "p")
    await restarted.load()
    assert restarted.staged("a") is None
    assert restarted.records["a"].phase == "Cordoning"
    await restarted.commit(lambda draft: None)
    assert kube.records()["a"]["phase"] == "Cordoning", "what was lost is not written later"
    await store.close()


async def test_a_staged_change_whose_write_failed_is_kept_for_the_next_one() -> None:
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    store.stage(move("a", "Cordoning", "Verifying"), NodeProgress(name="a", phase="Verifying"))
    working = kube.annotate_node

    async def refuse(node: str, key: str, value: str | None) -> None:
        raise KubeApiError(503, "unavailable")

    kube.annotate_node = refuse  # type: ignore[method-assign]
    with pytest.raises(KubeApiError):
        await store.commit(lambda draft: None, nodes=["a"])
    staged = store.staged("a")
    assert staged is not None and staged.phase == "Verifying", "still what the worker sees"
    kube.annotate_node = working  # type: ignore[method-assign]
    await store.commit(lambda draft: None, nodes=["a"])
    assert kube.records()["a"]["phase"] == "Verifying"
    await store.close()


async def test_a_staged_record_being_written_lands_before_the_uncordon_that_carries_done(
    monkeypatch: Any,
) -> None:
    """The fault campaign's seed 733: a staged Verifying, written alone after the deferral
    and slow to land, arrived after the uncordon that carried Done, and the Node said
    Verifying for good while the engine thought the node done."""
    monkeypatch.setattr(status_module, "DEFER_S", 0.05)
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    writes_alone = kube.annotate_node
    sent = asyncio.Event()

    async def slow(node: str, key: str, value: str | None) -> None:
        sent.set()
        await asyncio.sleep(0.3)  # the request is on its way; it lands later
        await writes_alone(node, key, value)

    kube.annotate_node = slow  # type: ignore[method-assign]
    store.stage(move("a", "Cordoning", "Verifying"), NodeProgress(name="a", phase="Verifying"))
    await asyncio.wait_for(sent.wait(), 2)  # the deferred writer sent Verifying alone
    store.stage(move("a", "Verifying", "Uncordoning"), NodeProgress(name="a", phase="Uncordoning"))
    done = NodeProgress(name="a", phase="Done")
    async with store.riding("a"):  # the uncordon, writing Done on the Node itself
        await writes_alone("a", annotation_key("p"), encode(done, "uid-1"))

    def finish(draft: Draft) -> None:
        if draft.nodes["a"].phase == "Uncordoning":
            draft.nodes["a"] = done  # the very record the uncordon carried: not written again

    await store.commit(finish, nodes=["a"], on_node=done)
    await asyncio.sleep(0.4)  # anything still in flight lands
    assert kube.records()["a"]["phase"] == "Done"
    await store.close()


class _CountingScans(dict[str, NodeProgress]):
    """Records that count how often they are walked through."""

    scans = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _CountingScans.scans += 1
        return super().__iter__()

    def items(self):  # type: ignore[no-untyped-def]
        _CountingScans.scans += 1
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        _CountingScans.scans += 1
        return super().values()


async def test_a_transition_does_not_walk_through_every_record() -> None:
    kube = with_nodes(*(f"n-{i}" for i in range(50)))
    store = StatusStore(kube, "p")
    await store.load()
    for i in range(50):
        await store.commit(claim(f"n-{i}"))
    store.records = _CountingScans(store.records)
    writes = store.record_writes
    await store.commit(move("n-7", "Cordoning", "Draining"), nodes=["n-7"])
    assert _CountingScans.scans == 0, "a commit costs work per record it changes, not per record"
    assert store.record_writes == writes + 1
    assert store.records["n-7"].phase == "Draining"
    assert kube.records()["n-7"]["phase"] == "Draining"


async def test_records_left_in_the_status_are_moved_even_when_nothing_else_changes() -> None:
    legacy = {"phase": "Progressing", "nodes": [{"name": "a", "phase": "Done"}]}
    kube = with_nodes("a", status=legacy)
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(lambda draft: None)
    assert "nodes" not in kube.plan["status"]
    assert kube.records()["a"]["phase"] == "Done"


async def verifying_staged() -> tuple[FakeKube, StatusStore]:
    """A node stored Rebooting, whose move to Verifying is staged."""
    kube = with_nodes("a")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    await store.commit(move("a", "Cordoning", "Rebooting"), nodes=["a"])
    store.stage(move("a", "Rebooting", "Verifying"), NodeProgress(name="a", phase="Verifying"))
    return kube, store


async def test_a_staged_change_that_no_longer_applies_is_dropped_when_the_records_are_read() -> (
    None
):
    """Fault campaign seed 1472: a staged Verifying went back to be written after a write that
    failed, but that write (a Failed) had landed, its reply lost; the worker resumed from the
    staged record and verified and uncordoned a node its stored record said had failed."""
    kube, store = await verifying_staged()
    with replies_lost(kube), pytest.raises(KubeApiError):
        await store.commit(move("a", "Verifying", "Failed"), nodes=["a"])
    assert kube.records()["a"]["phase"] == "Failed", "the write landed"
    await store.load()  # what the worker does after a failed write
    assert store.records["a"].phase == "Failed"
    assert store.staged("a") is None, "the staged Verifying applies to a record that is gone"
    await store.commit(lambda draft: None, nodes=["a"])
    assert kube.records()["a"]["phase"] == "Failed"


async def test_a_staged_change_that_still_applies_survives_a_reload() -> None:
    _, store = await verifying_staged()
    await store.load()
    staged = store.staged("a")
    assert staged is not None and staged.phase == "Verifying"
    await store.close()


async def test_a_record_the_cordon_carried_is_taken_without_waiting_for_the_writes_ahead() -> None:
    kube = with_nodes("a", "b")
    store = StatusStore(kube, "p")
    await store.load()
    await store.commit(claim("a"))
    patch = kube.patch_plan_status

    async def slow(name: str, status: dict[str, Any], rv: str) -> str:
        await asyncio.sleep(0.5)
        return await patch(name, status, rv)

    kube.patch_plan_status = slow  # type: ignore[method-assign]
    store.stage(move("a", "Cordoning", "Cordoning"), NodeProgress(name="a", phase="Cordoning"))
    ahead = asyncio.create_task(store.commit(claim("b")))  # a status write in flight
    await asyncio.sleep(0.01)
    draining = NodeProgress(name="a", phase="Draining")
    async with store.riding("a"):  # the cordon, carrying Draining
        await kube.annotate_node("a", annotation_key("p"), encode(draining, "uid-1"))
    assert store.take_on_node("a", becomes("Cordoning", draining), draining)
    assert store.records["a"] is draining and store.staged("a") is None
    assert not ahead.done(), "taken without waiting for the status write ahead"
    await ahead
    writes = store.record_writes
    await store.commit(lambda draft: None, nodes=["a"])
    assert store.record_writes == writes, "not written again"
    assert kube.records()["a"]["phase"] == "Draining"
    # a change computed from a record that has moved on is left to commit, which refuses it
    verifying = NodeProgress(name="a", phase="Verifying")
    assert not store.take_on_node("a", becomes("Cordoning", verifying), verifying)
    assert store.records["a"] is draining
    await store.close()
