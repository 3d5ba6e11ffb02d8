"""The Prometheus gate before new starts: asks Prometheus, ``core.prometheus`` judges."""

from __future__ import annotations

from nodeos.core import prometheus
from nodeos.models.rollout import PrometheusGate
from nodeos.ports.prometheus import PrometheusApi, PrometheusError


async def prometheus_problem(api: PrometheusApi, gate: PrometheusGate) -> tuple[str, str] | None:
    """(reason, message) when the gate holds new starts; None when it lets them go."""
    try:
        if gate.query:
            problem = prometheus.query_problem(gate.query, await api.query(gate.url, gate.query))
            if problem is not None:
                return "PrometheusQueryNotEmpty", problem
        if gate.alerts is not None:
            problem = prometheus.alerts_problem(gate.alerts, await api.alerts(gate.url))
            if problem is not None:
                return "AlertsFiring", problem
    except PrometheusError as error:
        return "PrometheusUnavailable", f"the prometheus gate cannot be checked: {error}"
    return None
