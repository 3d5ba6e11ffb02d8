"""``PrometheusClient``: the ``PrometheusApi`` port over Prometheus's HTTP API (aiohttp).

Every request has a deadline; no answer, a non-2xx status or ``status: error`` all raise
``PrometheusError`` with what happened, so the gate holds rather than reading "no data".
"""

from __future__ import annotations

from typing import Any

import aiohttp

from nodeos.ports.fence import FENCE
from nodeos.ports.prometheus import Alert, PrometheusError

_TIMEOUT_S = 10.0


class PrometheusClient:
    """Asks a Prometheus server; one session per call keeps it free of shared state."""

    def __init__(self, timeout_s: float = _TIMEOUT_S) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def query(self, url: str, promql: str) -> list[dict[str, Any]]:
        """The instant query's result vector (or the scalar/string as one entry)."""
        data = await self._get(url, "/api/v1/query", {"query": promql})
        result = data.get("result")
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result or [])

    async def alerts(self, url: str) -> list[Alert]:
        """The active (pending and firing) alerts."""
        data = await self._get(url, "/api/v1/alerts", {})
        return [
            Alert(
                name=str((a.get("labels") or {}).get("alertname", "")),
                state=str(a.get("state", "")),
                labels=dict(a.get("labels") or {}),
            )
            for a in data.get("alerts") or []
        ]

    async def _get(self, url: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        FENCE.check()
        target = url.rstrip("/") + path
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.get(target, params=params) as reply,
            ):
                try:
                    body = await reply.json(content_type=None)
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    raise PrometheusError(f"{target} answered HTTP {reply.status}, not JSON")
                if reply.status >= 300 or body.get("status") != "success":
                    why = body.get("error") or body.get("errorType") or f"HTTP {reply.status}"
                    raise PrometheusError(f"{target} answered an error: {why}")
                data = body.get("data")
                return data if isinstance(data, dict) else {"alerts": data or []}
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise PrometheusError(
                f"no answer from {url}: {error or type(error).__name__}"
            ) from None
