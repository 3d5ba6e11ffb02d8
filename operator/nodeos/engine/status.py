"""The plan's state, kept in memory and written back: the status on the plan, records on Nodes.

The engine is the only writer, so it works on its own copy; every change goes through
``commit``, which serialises writers (batching changes that arrive during a write). The plan's
status (phase, counts, conditions, the in-flight ledger; nothing that grows with the fleet) is
patched with the last resourceVersion, and on a conflict (someone edited the plan) re-read and
the changes re-applied. Each node's record is written to its own Node (``core.records``), and
only when it changed, so a transition costs one small write whatever the fleet's size.

Order: the status first, then the records. A slot is in the ledger before its node's record
says the node was claimed, and the worker starts only once both are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from nodeos.core import records
from nodeos.models.upgradeplan import NodeProgress, UpgradePlanStatus
from nodeos.ports.kube import ConflictError, KubeApi, NotFoundError

Mutation = Callable[["Draft"], None]
_MAX_CONFLICTS = 10
_PARALLEL_RECORD_WRITES = 16


class Draft:
    """A mutable view of the status that a mutation edits."""

    def __init__(self, status: UpgradePlanStatus) -> None:
        self.nodes: dict[str, NodeProgress] = {n.name: n for n in status.nodes}
        self.in_flight: list[str] = list(status.in_flight)
        self.summary: dict[str, Any] = status.model_dump(
            exclude={"nodes", "in_flight"}, exclude_unset=True
        )

    def to_status(self) -> UpgradePlanStatus:
        """The status the draft describes (node records sorted by name)."""
        data = dict(self.summary)
        data["nodes"] = [self.nodes[name] for name in sorted(self.nodes)]
        data["in_flight"] = list(self.in_flight)
        return UpgradePlanStatus.model_validate(data)


class StatusStore:
    """The one place that writes a plan's status and its nodes' records."""

    def __init__(self, kube: KubeApi, name: str) -> None:
        self.kube = kube
        self.name = name
        self.uid = ""
        self.status = UpgradePlanStatus()
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
        self._lock = asyncio.Lock()
        self._pending: list[tuple[Mutation, asyncio.Future[UpgradePlanStatus]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def load(self) -> dict[str, Any]:
        """Reads the plan and its records on the Nodes; returns the plan object.

        Records that an earlier version kept in ``status.nodes`` are taken where the Node has
        none; the next write moves them to their Nodes and clears the list. Waits for a write
        in progress, so it never mixes with one.
        """
        async with self._lock:
            return await self._load()

    async def _load(self) -> dict[str, Any]:
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
        self.status = stored.model_copy(update={"nodes": _sorted(merged)})
        return body

    async def reload_status(self) -> None:
        """Reads the plan's status again (after a conflict); the records stay as they are."""
        stored = self._read_plan(await self.kube.get_plan(self.name))
        self.status = stored.model_copy(update={"nodes": self.status.nodes})

    def _read_plan(self, body: dict[str, Any]) -> UpgradePlanStatus:
        self.uid = str(body["metadata"].get("uid") or "")
        self.resource_version = body["metadata"]["resourceVersion"]
        self.annotations = dict(body["metadata"].get("annotations") or {})
        return UpgradePlanStatus.model_validate(body.get("status") or {})

    async def commit(self, mutate: Mutation) -> UpgradePlanStatus:
        """Applies ``mutate`` and returns once it is stored (resourceVersion-guarded).

        Changes that arrive while a write is in flight are stored together by the next write,
        in arrival order, so many workers cost few writes; each caller still waits for its own
        change to be durable. The in-memory copy changes only once the write succeeded.
        """
        done: asyncio.Future[UpgradePlanStatus] = asyncio.get_running_loop().create_future()
        self._pending.append((mutate, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def close(self) -> None:
        """Stops the writer; changes not yet stored are dropped (their callers are gone)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    status = await self._write([mutate for mutate, _ in batch])
                except Exception as error:  # every waiter of this batch learns it failed
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(status)

    async def _reread_unsure(self) -> None:
        """Replaces the records whose write failed with what their Nodes carry now."""
        found = await self.kube.nodes_annotated(self._key)
        current = {record.name: record for record in self.status.nodes}
        for name in self._unsure:
            text = found.get(name)
            record = records.decode(text, name, self.uid) if text is not None else None
            if record is None:
                self._stored.pop(name, None)
                current.pop(name, None)
            else:
                self._stored[name] = current[name] = record
        self._unsure.clear()
        self.status = self.status.model_copy(update={"nodes": _sorted(current)})

    async def _write(self, mutations: list[Mutation]) -> UpgradePlanStatus:
        if self._unsure:
            await self._reread_unsure()
        for _ in range(_MAX_CONFLICTS):
            draft = Draft(self.status)
            for mutate in mutations:
                mutate(draft)
            status = draft.to_status()
            if status == self.status:
                return status
            payload = _payload(status)
            if payload != _payload(self.status):
                try:
                    self.resource_version = await self.kube.patch_plan_status(
                        self.name, payload, self.resource_version
                    )
                except ConflictError:
                    await self.reload_status()
                    continue
                self.writes += 1
                self.status = status.model_copy(update={"nodes": self.status.nodes})
            await self._write_records(draft.nodes)
            self.status = status
            return status
        raise ConflictError(f"{self.name}: status kept changing under us")

    async def _write_records(self, wanted: dict[str, NodeProgress]) -> None:
        """Writes every record that differs from the stored one (None: removes it).

        A record whose write failed keeps its stored value in memory, and the first error is
        raised once the others are written.
        """
        changes: dict[str, NodeProgress | None] = {
            name: record for name, record in wanted.items() if self._stored.get(name) != record
        }
        changes |= {name: None for name in self._stored if name not in wanted}
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

        outcomes = await asyncio.gather(
            *(write(name, record) for name, record in changes.items()), return_exceptions=True
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors:
            current = {record.name: record for record in self.status.nodes}
            for name in changes:
                if self._stored.get(name) != wanted.get(name):
                    self._unsure.add(name)
                elif name in wanted:
                    current[name] = wanted[name]
                else:
                    current.pop(name, None)
            self.status = self.status.model_copy(update={"nodes": _sorted(current)})
            raise errors[0]


def _sorted(by_name: dict[str, NodeProgress]) -> list[NodeProgress]:
    return [by_name[name] for name in sorted(by_name)]


def _payload(status: UpgradePlanStatus) -> dict[str, Any]:
    """The status as a merge patch: set fields as they are, cleared fields as null.

    ``nodes`` is always null: records live on the Nodes (a list left by an earlier version is
    cleared by the first write).
    """
    data = status.model_dump(by_alias=True, exclude_none=True, exclude={"nodes"}, mode="json")
    for name, field in UpgradePlanStatus.model_fields.items():
        data.setdefault(field.alias or name, None)
    return data
