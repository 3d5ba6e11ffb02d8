"""Prometheus metrics of the operator (served by ``prometheus_client`` on the metrics port).

Series labelled with a plan or a NodeOSConfig are created through ``series``, which remembers
them under their owner, so ``forget`` removes them when the owner is deleted: no series
outlives what it describes (an alert on a deleted plan would fire for ever). Every metric is
listed, with its labels, in docs/operating.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

PLAN_PHASE = Gauge("nodeos_upgradeplan_phase", "1 for the plan's current phase", ["plan", "phase"])
NODES_BY_PHASE = Gauge(
    "nodeos_upgradeplan_nodes",
    "Selected nodes by phase (Pending, in-flight phases, Done, Failed); sums to the selection",
    ["plan", "phase"],
)
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
EVENTS_SUPPRESSED = Counter(
    "nodeos_events_suppressed_total",
    "Routine node Events not posted on the plan once its budget was spent (still on the Node)",
    ["plan"],
)
NODE_FAILURES = Counter(
    "nodeos_node_failures_total",
    "Nodes that ended an attempt Failed or RolledBack, by reason",
    ["plan", "reason"],
)
OSAPI_SECONDS = Histogram(
    "nodeos_osapi_call_duration_seconds",
    "OS API call latency",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OSAPI_ERRORS = Counter(
    "nodeos_osapi_errors_total",
    "OS API call failures by kind (polls of a rebooting node are not failures)",
    ["method", "kind"],
)
TRANSITION_SECONDS = Histogram(
    "nodeos_transition_latency_seconds",
    "A slot freed (its node done) to the next node cordoned in it, per slot",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
FLEET_NODES = Gauge("nodeos_fleet_nodes", "Nodes by OS version", ["config", "version"])
FLEET_DRIFTED = Gauge(
    "nodeos_fleet_drifted_nodes", "Nodes that differ from the desired state", ["config"]
)
FLEET_UNREACHABLE = Gauge(
    "nodeos_fleet_unreachable_nodes", "Nodes whose OS API did not answer", ["config"]
)

_SERIES: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}


def series(metric: Any, owner: str, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered under ``owner`` (e.g. ``plan/fleet-v1-13``)."""
    _SERIES.setdefault(owner, set()).add((metric, labels))
    return metric.labels(*labels)


def keep_only(metric: Any, owner: str, wanted: set[tuple[str, ...]]) -> None:
    """Removes ``owner``'s series of ``metric`` whose labels are not in ``wanted``."""
    mine = _SERIES.get(owner, set())
    for entry in [e for e in mine if e[0] is metric and e[1] not in wanted]:
        mine.discard(entry)
        with contextlib.suppress(KeyError):
            metric.remove(*entry[1])


def forget(owner: str) -> None:
    """Removes every series remembered under ``owner``."""
    for metric, labels in _SERIES.pop(owner, set()):
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
