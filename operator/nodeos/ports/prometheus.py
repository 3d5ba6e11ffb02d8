"""The Prometheus HTTP API as the rollout's gate uses it, as a Protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class PrometheusError(Exception):
    """Prometheus did not answer, or answered with an error (never read as "no data")."""


@dataclass(frozen=True)
class Alert:
    """One alert as ``/api/v1/alerts`` reports it."""

    name: str
    state: str  # "firing" or "pending"
    labels: Mapping[str, str]


class PrometheusApi(Protocol):
    """Instant queries and active alerts of the Prometheus at ``url``."""

    async def query(self, url: str, promql: str) -> list[dict[str, Any]]:
        """The instant query's result (one entry per series); raises ``PrometheusError``."""
        ...

    async def alerts(self, url: str) -> list[Alert]:
        """The active alerts; raises ``PrometheusError``."""
        ...
