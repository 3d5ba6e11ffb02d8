"""Reads a plan's live body (which kopf changes in place between awaits) at one instant.

The spec is validated by the model once per distinct spec, not at every worker poll. A spec
that does not validate (e.g. written for another version of nodeos) raises
``InvalidSpecError`` naming the field as the API spells it; the last valid snapshot stays
available so nodes in flight can finish under it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nodeos.models.upgradeplan import UpgradePlanSpec


@dataclass(frozen=True)
class Snapshot:
    """The plan as read at one instant."""

    spec: UpgradePlanSpec
    generation: int
    annotations: Mapping[str, str]
    created: str


class InvalidSpecError(Exception):
    """The plan's spec does not validate."""


class PlanReader:
    """Snapshots of one plan's body; ``last_good`` is the latest that validated."""

    def __init__(self, body: Callable[[], Mapping[str, Any]]) -> None:
        self._body = body
        self._seen: tuple[str, UpgradePlanSpec | InvalidSpecError] | None = None
        self.last_good: Snapshot | None = None

    def read(self) -> Snapshot:
        """The plan now; raises ``InvalidSpecError`` when its spec does not validate."""
        body = self._body()
        metadata = body["metadata"]
        spec = self._spec(body["spec"])
        self.last_good = Snapshot(
            spec=spec,
            generation=int(metadata.get("generation", 0)),
            annotations=dict(metadata.get("annotations") or {}),
            created=str(metadata.get("creationTimestamp", "")),
        )
        return self.last_good

    def _spec(self, raw: Mapping[str, Any]) -> UpgradePlanSpec:
        key = repr(raw)  # small next to the status, and cheaper than validating again
        if self._seen is None or self._seen[0] != key:
            try:
                found: UpgradePlanSpec | InvalidSpecError = UpgradePlanSpec.model_validate(raw)
            except ValidationError as error:
                found = InvalidSpecError(_describe(error))
            self._seen = (key, found)
        result = self._seen[1]
        if isinstance(result, InvalidSpecError):
            raise result
        return result


def _describe(error: ValidationError) -> str:
    """The first problem, with the field's path as the API spells it."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in ("spec", *first["loc"]))
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: {first['msg']}{more}; no new node starts until the spec is fixed"
