"""The Prometheus gate's rules: which query results and alerts hold new starts. Pure.

A query holds the plan while it returns any series. An alert holds it while it is firing
(pending alerts do not) and its name matches ``alerts.match`` and not ``alerts.ignore``; both
are regular expressions anchored at both ends, as in PromQL label matchers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nodeos.models.rollout import AlertFilter
from nodeos.ports.prometheus import Alert

_SHOWN = 3


def query_problem(promql: str, result: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the query's result holds the plan (None when it returned nothing)."""
    if not result:
        return None
    series = _first_few([_series(item) for item in result[:_SHOWN]], len(result))
    return f"prometheus query {promql!r} returned {len(result)} series: {series}"


def alerts_problem(rules: AlertFilter, alerts: Sequence[Alert]) -> str | None:
    """Why firing alerts hold the plan (None when none that counts is firing)."""
    blocking = sorted(
        {
            alert.name
            for alert in alerts
            if alert.state == "firing"
            and re.fullmatch(rules.match, alert.name)
            and not (rules.ignore and re.fullmatch(rules.ignore, alert.name))
        }
    )
    if not blocking:
        return None
    return f"{len(blocking)} alert(s) firing: {_first_few(blocking[:_SHOWN], len(blocking))}"


def _first_few(shown: Sequence[str], total: int) -> str:
    """The names shown, and how many more of ``total`` there are."""
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    return ", ".join(shown) + more


def _series(item: Mapping[str, Any]) -> str:
    metric = dict(item.get("metric") or {})
    name = metric.pop("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return f"{name}{{{labels}}}"
