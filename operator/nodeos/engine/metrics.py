"""Prometheus metrics of the operator (served by ``prometheus_client`` on the metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLAN_PHASE = Gauge("nodeos_upgradeplan_phase", "1 for the plan's current phase", ["plan", "phase"])
NODES_BY_PHASE = Gauge("nodeos_upgradeplan_nodes", "Selected nodes by phase", ["plan", "phase"])
NODE_UPGRADE_SECONDS = Histogram(
    "nodeos_node_upgrade_duration_seconds",
    "Cordon to verified, per node",
    ["plan"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
DRAIN_SECONDS = Histogram(
    "nodeos_node_drain_duration_seconds",
    "Drain duration per node",
    ["plan"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
)
NODE_FAILURES = Counter(
    "nodeos_node_failures_total", "Failed node attempts by reason", ["plan", "reason"]
)
OSAPI_SECONDS = Histogram(
    "nodeos_osapi_call_duration_seconds",
    "OS API call latency",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OSAPI_ERRORS = Counter(
    "nodeos_osapi_errors_total", "OS API call failures by kind", ["method", "kind"]
)
TRANSITION_SECONDS = Histogram(
    "nodeos_transition_latency_seconds",
    "A node verified healthy to the next node cordoned",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
