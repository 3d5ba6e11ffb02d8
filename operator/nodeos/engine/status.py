"""The plan's status, kept in memory and written back with resourceVersion-guarded patches.

The engine is the status's only writer, so it works on its own copy; every change goes through
``commit``, which serialises writers (batching changes that arrive during a write), patches the
whole status with the last resourceVersion, and on a conflict (someone edited the plan)
re-reads the object and re-applies the changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nodeos.models.upgradeplan import NodeProgress, UpgradePlanStatus
from nodeos.ports.kube import ConflictError, KubeApi

Mutation = Callable[["Draft"], None]
_MAX_CONFLICTS = 10


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
    """The one place that writes a plan's status."""

    def __init__(self, kube: KubeApi, name: str) -> None:
        self.kube = kube
        self.name = name
        self.status = UpgradePlanStatus()
        self.resource_version = ""
        self.annotations: dict[str, str] = {}
        self.writes = 0
        self._lock = asyncio.Lock()
        self._pending: list[tuple[Mutation, asyncio.Future[UpgradePlanStatus]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def load(self) -> dict[str, Any]:
        """Reads the plan; returns the whole object."""
        body = await self.kube.get_plan(self.name)
        self.resource_version = body["metadata"]["resourceVersion"]
        self.annotations = dict(body["metadata"].get("annotations") or {})
        self.status = UpgradePlanStatus.model_validate(body.get("status") or {})
        return body

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

    async def _write(self, mutations: list[Mutation]) -> UpgradePlanStatus:
        for _ in range(_MAX_CONFLICTS):
            draft = Draft(self.status)
            for mutate in mutations:
                mutate(draft)
            status = draft.to_status()
            if status == self.status:
                return status
            try:
                self.resource_version = await self.kube.patch_plan_status(
                    self.name, _payload(status), self.resource_version
                )
            except ConflictError:
                await self.load()
                continue
            self.status = status
            self.writes += 1
            return status
        raise ConflictError(f"{self.name}: status kept changing under us")


def _payload(status: UpgradePlanStatus) -> dict[str, Any]:
    """The status as a merge patch: set fields as they are, cleared top-level fields as null."""
    data = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    for name, field in UpgradePlanStatus.model_fields.items():
        data.setdefault(field.alias or name, None)
    return data
