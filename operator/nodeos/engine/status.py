"""The plan's state, kept in memory and written back: the status on the plan, records on Nodes.

The engine is the only writer, so it works on its own copy; every change goes through
``commit``, which serialises writers (batching changes that arrive during a write). The plan's
status (phase, counts, conditions, the in-flight ledger; nothing that grows with the fleet) is
patched with the last resourceVersion, and on a conflict (someone edited the plan) re-read and
the changes re-applied. Each node's record is written to its own Node (``core.records``), and
only when it changed, so a transition costs one small write whatever the fleet's size. Nor does
a commit cost work in proportion to the fleet: a ``Draft`` lays the mutation's changes over the
records in memory (copy on write), and only the records it changed are compared and written.

Order: the status first, then the records. A slot is in the ledger before its node's record
says the node was claimed, and the worker starts only once both are stored.

A change whose loss in a restart is harmless (``statemachine.deferrable``: the resumed worker
repeats an idempotent check and gets there again), and a slot's first record, are ``stage``d
instead: the engine sees them at once, and they are written with the node's next commit or
within ``DEFER_S``, whichever comes first. Most are overtaken by the node's next durable change,
or ride on the cordon's own write, and cost no request of their own. A record that rode on the
cordon or the uncordon is taken into memory at once (``take_on_node``): it waits for no write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from nodeos.core import records
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanStatus
from nodeos.ports.kube import ConflictError, KubeApi, NotFoundError

Mutation = Callable[["Draft"], None]
_MAX_CONFLICTS = 10
_PARALLEL_RECORD_WRITES = 16
DEFER_S = 5.0  # long enough for a Verify to end with the uncordon that carries Done


class Draft:
    """A mutable view of the status that a mutation edits.

    ``nodes`` reads through to the records in memory and keeps only what the mutation changes,
    so a draft costs nothing per record it does not touch.
    """

    def __init__(self, summary: UpgradePlanStatus, records: Mapping[str, NodeProgress]) -> None:
        self.nodes = _Overlay(records)
        self.in_flight: list[str] = list(summary.in_flight)
        self.summary: dict[str, Any] = summary.model_dump(
            exclude={"nodes", "in_flight"}, exclude_unset=True
        )

    def replace_nodes(self, records: Mapping[str, NodeProgress]) -> None:
        """Makes ``records`` the whole set (those missing from it are removed)."""
        for name in [name for name in self.nodes if name not in records]:
            del self.nodes[name]
        for name, record in records.items():
            if self.nodes.get(name) is not record:
                self.nodes[name] = record

    def to_summary(self) -> UpgradePlanStatus:
        """The plan's status the draft describes, without the records."""
        data = dict(self.summary)
        data["in_flight"] = list(self.in_flight)
        return UpgradePlanStatus.model_validate(data)


class _Overlay(MutableMapping[str, NodeProgress]):
    """Records as stored, with a draft's changes on top (None in ``changes``: removed)."""

    def __init__(self, base: Mapping[str, NodeProgress]) -> None:
        self.base = base
        self.changes: dict[str, NodeProgress | None] = {}

    def __getitem__(self, name: str) -> NodeProgress:
        if name in self.changes:
            record = self.changes[name]
            if record is None:
                raise KeyError(name)
            return record
        return self.base[name]

    def __setitem__(self, name: str, record: NodeProgress) -> None:
        self.changes[name] = record

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.changes[name] = None

    def __iter__(self) -> Iterator[str]:
        changes = self.changes
        for name in self.base:
            if name not in changes or changes[name] is not None:
                yield name
        for name, record in list(changes.items()):
            if record is not None and name not in self.base:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


class StatusStore:
    """The one place that writes a plan's status and its nodes' records."""

    def __init__(self, kube: KubeApi, name: str) -> None:
        self.kube = kube
        self.name = name
        self.uid = ""
        # The plan's status as stored (no records: ``records`` holds them), replaced, never
        # changed in place, by each write
        self.summary = UpgradePlanStatus()
        # Every record as the engine last committed it (changed in place by each write): the
        # stored ones, and records of Nodes that are gone or whose write failed meanwhile
        self.records: dict[str, NodeProgress] = {}
        self.resource_version = ""
        self.annotations: dict[str, str] = {}
        self.writes = 0  # status writes
        self.record_writes = 0  # Node annotation writes
        self._key = records.annotation_key(name)
        # The records as stored (on their Nodes, or nowhere when the Node is gone)
        self._stored: dict[str, NodeProgress] = {}
        # Records whose last write failed: it may have landed all the same (a lost reply), so
        # the next write reads them back first
        self._unsure: set[str] = set()
        # a status write failed, and may have landed all the same: the summary in memory is
        # in doubt, and is read again before the next write compares anything with it
        self._status_unsure = False
        # Records in memory that are not on their Nodes yet (moved from an earlier version's
        # status list); the next write stores them
        self._unwritten: set[str] = set()
        self._legacy_list = False  # the stored status still has that list: the next write clears it
        self._lock = asyncio.Lock()
        self._pending: list[tuple[Mutation, asyncio.Future[UpgradePlanStatus] | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Staged changes: the records as the engine sees them before they are written, and
        # the mutations that write them (in order, ahead of the next commit's)
        self._staged: dict[str, NodeProgress] = {}
        self._deferred: dict[str, list[tuple[Mutation, NodeProgress]]] = {}
        self._deferred_since: dict[str, float] = {}  # each node's oldest, in loop time
        self._deferred_writer: asyncio.Task[None] | None = None
        self._riding: set[str] = set()  # nodes whose record rides on a cordon or uncordon now
        self._writing: list[tuple[Mutation, asyncio.Future[UpgradePlanStatus] | None]] = []

    async def load(self) -> dict[str, Any]:
        """Reads the plan and its records on the Nodes; returns the plan object.

        Records that an earlier version kept in ``status.nodes`` are taken where the Node has
        none; the next write moves them to their Nodes and clears the list. Waits for a write
        in progress, so it never mixes with one.
        """
        async with self._lock:
            return await self._load()

    async def _load(self) -> dict[str, Any]:
        # Staged changes are kept: the workers that made them still run on them, and a slot's
        # first record may be on its way to the Node with the cordon. A restarted engine has
        # none (the resumed workers redo what was lost). Those that no longer apply to what
        # was read are dropped (``_drop_stale``).
        body = await self.kube.get_plan(self.name)
        found = await self.kube.nodes_annotated(self._key)
        stored = self._read_plan(body)
        on_nodes = {}
        for node, text in found.items():
            record = records.decode(text, node, self.uid)
            if record is not None:
                on_nodes[node] = record
        self._stored = on_nodes
        self._unsure.clear()
        merged = {record.name: record for record in stored.nodes} | on_nodes
        self.records = dict(sorted(merged.items()))
        self._unwritten = set(merged) - set(on_nodes)
        self.summary = stored.model_copy(update={"nodes": []})
        self._status_unsure = False
        self._drop_stale()
        return body

    def _drop_stale(self) -> None:
        """Forgets staged changes that no longer apply to the records as read.

        A write that failed puts its staged changes back for the next; but its reply may have
        been lost after it landed, with a later change of the same node, which the staged
        ones (computed from an earlier record) would not apply to. The engine must not go on
        from them: a worker would verify a node the stored record says failed.
        """
        for name, staged in list(self._staged.items()):
            draft = Draft(self.summary, self.records)
            queued: list[Mutation] = [
                m for m, _ in self._pending if isinstance(m, _Staged) and m.record.name == name
            ]
            queued += [mutate for mutate, _ in self._deferred.get(name, ())]
            for mutate in queued:
                mutate(draft)
            if draft.nodes.get(name) != staged:
                del self._staged[name]
                self._deferred.pop(name, None)
                self._deferred_since.pop(name, None)

    async def reload_status(self) -> None:
        """Reads the plan's status again (after a conflict); the records stay as they are."""
        stored = self._read_plan(await self.kube.get_plan(self.name))
        self.summary = stored.model_copy(update={"nodes": []})
        self._status_unsure = False

    def _read_plan(self, body: dict[str, Any]) -> UpgradePlanStatus:
        self.uid = str(body["metadata"].get("uid") or "")
        self.resource_version = body["metadata"]["resourceVersion"]
        self.annotations = dict(body["metadata"].get("annotations") or {})
        stored = UpgradePlanStatus.model_validate(body.get("status") or {})
        self._legacy_list = bool(stored.nodes)
        return stored

    def annotation(self, record: NodeProgress) -> dict[str, str]:
        """The Node annotation that stores ``record`` (for a write made by someone else)."""
        return {self._key: records.encode(record, self.uid)}

    def staged(self, name: str) -> NodeProgress | None:
        """The node's staged record, if a change to it waits to be written."""
        return self._staged.get(name)

    def stage(self, mutate: Mutation, record: NodeProgress) -> None:
        """Makes ``record`` visible now and writes it (``mutate``) later: see the module.

        Only a commit for the same node (or ``DEFER_S``) takes it: other nodes' commits, which
        at scale come every few milliseconds, would otherwise write it at once.
        """
        loop = asyncio.get_running_loop()
        self._staged[record.name] = record
        self._deferred.setdefault(record.name, []).append((mutate, record))
        self._deferred_since.setdefault(record.name, loop.time())
        if self._deferred_writer is None or self._deferred_writer.done():
            self._deferred_writer = asyncio.create_task(self._write_deferred())

    @contextlib.asynccontextmanager
    async def riding(self, name: str) -> AsyncIterator[None]:
        """Around a cordon or uncordon that carries the node's record in its own write.

        Two writes of one Node's record must not be in flight at once: the one landing last
        wins, and a staged record landing after the uncordon that carried Done would put the
        node back in Verifying on its Node. So the node's staged changes are held back meanwhile
        (the commit that follows takes them in, or they are written after), and a write that
        already took them is waited for.
        """
        self._riding.add(name)
        try:
            if self._writing_staged(name):
                async with self._lock:  # a staged record of it is being written: let it land
                    pass
            yield
        finally:
            self._riding.discard(name)

    def _writing_staged(self, name: str) -> bool:
        """Whether a staged change of the node is in the write under way or the next one."""
        return any(
            isinstance(mutate, _Staged) and mutate.record.name == name
            for mutate, _ in (*self._writing, *self._pending)
        )

    async def _write_deferred(self) -> None:
        """Writes each node's staged changes once the oldest has waited ``DEFER_S``."""
        loop = asyncio.get_running_loop()
        while self._deferred_since:
            free = [
                since for name, since in self._deferred_since.items() if name not in self._riding
            ]
            oldest = min(free) if free else loop.time()  # all riding: look again in DEFER_S
            await asyncio.sleep(max(0.05, oldest + DEFER_S - loop.time()))
            now = loop.time()
            due = [
                name
                for name, since in self._deferred_since.items()
                if since + DEFER_S <= now and name not in self._riding
            ]
            if due:
                with contextlib.suppress(Exception):  # a failed write drops what it staged
                    await self.commit(_unchanged, nodes=due)

    async def commit(
        self,
        mutate: Mutation,
        *,
        nodes: Iterable[str] | None = (),
        on_node: NodeProgress | None = None,
    ) -> UpgradePlanStatus:
        """Applies ``mutate`` and returns once it is stored (resourceVersion-guarded).

        Changes that arrive while a write is in flight are stored together by the next write,
        in arrival order, so many workers cost few writes; each caller still waits for its own
        change to be durable. The in-memory copy changes only once the write succeeded.
        ``nodes``: the nodes whose records ``mutate`` may read (None: all); their staged
        changes (which happened before) are applied first. ``on_node``: a record ``mutate``
        puts in place that is on its Node already (a cordon or uncordon carried it), so it is
        not written again; it counts as stored only in the write that takes it in, so no
        other write, made from a copy without it, takes it for a change to undo.
        """
        done: asyncio.Future[UpgradePlanStatus] = asyncio.get_running_loop().create_future()
        self._take_deferred(nodes)
        self._pending.append((mutate if on_node is None else _OnNode(mutate, on_node), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    def take_on_node(self, name: str, mutate: Mutation, record: NodeProgress) -> bool:
        """Takes at once a change whose record a cordon or uncordon already put on its Node.

        Nothing is written, so nothing need wait for the writes ahead: the node's staged
        changes and ``mutate`` are applied to its record in memory, and if they lead to
        ``record`` (the one on the Node) it becomes the stored record and what was staged is
        done with. False, with nothing changed, when they do not (the record moved on), when
        the node's stored record is in doubt or a staged change of it is being written:
        ``commit(on_node=...)`` then decides, in order with the writes ahead.
        """
        if name in self._unsure or name in self._unwritten or self._writing_staged(name):
            return False
        draft = Draft(self.summary, self.records)
        for staged, _ in self._deferred.get(name, ()):
            staged(draft)
        mutate(draft)
        if draft.nodes.get(name) is not record or set(draft.nodes.changes) - {name}:
            return False
        self._stored[name] = self.records[name] = record
        self._staged.pop(name, None)
        self._deferred.pop(name, None)
        self._deferred_since.pop(name, None)
        return True

    def _take_deferred(self, nodes: Iterable[str] | None) -> None:
        """Queues these nodes' staged mutations ahead of what comes next (they came before)."""
        for name in list(self._deferred) if nodes is None else nodes:
            for mutate, record in self._deferred.pop(name, ()):
                self._pending.append((_Staged(mutate, record), None))
            self._deferred_since.pop(name, None)

    async def close(self) -> None:
        """Stops the writers; changes not yet stored are dropped (their callers are gone)."""
        for task in (self._flusher, self._deferred_writer):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._flusher = self._deferred_writer = None

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                self._writing = batch
                try:
                    status = await self._write([mutate for mutate, _ in batch])
                except Exception as error:  # every waiter of this batch learns it failed
                    self._defer_again(batch)  # still meant: written with the next try
                    for _, done in batch:
                        if done is not None and not done.done():
                            done.set_exception(error)
                    continue
                finally:
                    self._writing = []
                self._unstage(batch)
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_result(status)

    def _defer_again(
        self, batch: list[tuple[Mutation, asyncio.Future[UpgradePlanStatus] | None]]
    ) -> None:
        """Puts a failed batch's staged changes back, ahead of any staged since, for later."""
        now = asyncio.get_running_loop().time()
        again: dict[str, list[tuple[Mutation, NodeProgress]]] = {}
        for mutate, _ in batch:
            if isinstance(mutate, _Staged):
                again.setdefault(mutate.record.name, []).append((mutate.mutate, mutate.record))
        for name, changes in again.items():
            self._deferred[name] = changes + self._deferred.get(name, [])
            self._deferred_since[name] = now  # not at once: the API may be away
        if again and (self._deferred_writer is None or self._deferred_writer.done()):
            self._deferred_writer = asyncio.create_task(self._write_deferred())

    def _unstage(
        self, batch: list[tuple[Mutation, asyncio.Future[UpgradePlanStatus] | None]]
    ) -> None:
        for mutate, _ in batch:
            if (
                isinstance(mutate, _Staged)
                and self._staged.get(mutate.record.name) is mutate.record
            ):
                del self._staged[mutate.record.name]

    async def _reread_unsure(self) -> None:
        """Replaces the records whose write failed with what their Nodes carry now."""
        found = await self.kube.nodes_annotated(self._key)
        for name in self._unsure:
            text = found.get(name)
            record = records.decode(text, name, self.uid) if text is not None else None
            if record is None:
                self._stored.pop(name, None)
                self.records.pop(name, None)
            else:
                self._stored[name] = self.records[name] = record
            self._unwritten.discard(name)
        self._unsure.clear()

    async def _write(self, mutations: list[Mutation]) -> UpgradePlanStatus:
        if self._unsure:
            await self._reread_unsure()
        if self._status_unsure:
            await self.reload_status()
        for _ in range(_MAX_CONFLICTS):
            draft = Draft(self.summary, self.records)
            for mutate in mutations:
                mutate(draft)
            for mutate in mutations:
                if isinstance(mutate, _OnNode) and draft.nodes.get(mutate.record.name) is (
                    mutate.record
                ):
                    self._stored[mutate.record.name] = mutate.record
            summary = draft.to_summary()
            touched = set(draft.nodes.changes) | self._unwritten
            if summary == self.summary and not touched and not self._legacy_list:
                return summary
            payload = _payload(summary)
            if self._legacy_list or payload != _payload(self.summary):
                try:
                    self.resource_version = await self.kube.patch_plan_status(
                        self.name, payload, self.resource_version
                    )
                except ConflictError:
                    await self.reload_status()
                    continue
                except BaseException:
                    self._status_unsure = True
                    raise
                self.writes += 1
                self._legacy_list = False
            self.summary = summary
            await self._write_records({name: draft.nodes.get(name) for name in touched})
            return summary
        raise ConflictError(f"{self.name}: status kept changing under us")

    async def _write_records(self, wanted: dict[str, NodeProgress | None]) -> None:
        """Stores these records (None: removes it), writing those that differ from the stored.

        A record whose write failed keeps its stored value in memory, and the first error is
        raised once the others are written.
        """
        stored = self._stored
        changes: dict[str, NodeProgress | None] = {}
        for name, record in wanted.items():
            before = stored.get(name)
            # most records are the very objects stored: "is" spares comparing their fields
            if before is record or before == record:
                self._remember(name, record)  # on its Node already (a cordon carried it)
            else:
                changes[name] = record
        if not changes:
            return
        gate = asyncio.Semaphore(_PARALLEL_RECORD_WRITES)

        async def write(name: str, record: NodeProgress | None) -> None:
            value = None if record is None else records.encode(record, self.uid)
            async with gate:
                # a Node that is gone keeps its record only in memory
                with contextlib.suppress(NotFoundError):
                    await self.kube.annotate_node(name, self._key, value)
                self.record_writes += 1
            if record is None:
                self._stored.pop(name, None)
            else:
                self._stored[name] = record
            self._remember(name, record)

        outcomes = await asyncio.gather(
            *(write(name, record) for name, record in changes.items()), return_exceptions=True
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors:
            # a failed write may have landed all the same: the next write reads it back first
            self._unsure.update(name for name in changes if self._stored.get(name) != changes[name])
            raise errors[0]

    def _remember(self, name: str, record: NodeProgress | None) -> None:
        """The record is stored: memory says so."""
        if record is None:
            self.records.pop(name, None)
        else:
            self.records[name] = record
        self._unwritten.discard(name)


class _Staged:
    """A staged mutation, with the record it stages (unstaged once written, or failed)."""

    def __init__(self, mutate: Mutation, record: NodeProgress) -> None:
        self.mutate = mutate
        self.record = record

    def __call__(self, draft: Draft) -> None:
        self.mutate(draft)


class _OnNode:
    """A mutation putting in place a record that is on its Node already."""

    def __init__(self, mutate: Mutation, record: NodeProgress) -> None:
        self.mutate = mutate
        self.record = record

    def __call__(self, draft: Draft) -> None:
        self.mutate(draft)


def _unchanged(draft: Draft) -> None:
    """Changes nothing: a commit that only writes what was staged."""


def _payload(status: UpgradePlanStatus) -> dict[str, Any]:
    """The status as a merge patch: set fields as they are, cleared fields as null.

    ``nodes`` is always null: records live on the Nodes (a list left by an earlier version is
    cleared by the first write).
    """
    data = status.model_dump(by_alias=True, exclude_none=True, exclude={"nodes"}, mode="json")
    for name, field in UpgradePlanStatus.model_fields.items():
        data.setdefault(field.alias or name, None)
    return data
