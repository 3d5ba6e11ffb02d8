"""The Prometheus gate's rules: query results and alerts that hold new starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nodeos.core import prometheus
from nodeos.models.rollout import AlertFilter
from nodeos.ports.prometheus import Alert


def alert(name: str, state: str = "firing") -> Alert:
    return Alert(name=name, state=state, labels={"alertname": name})


def test_an_empty_query_result_lets_nodes_start() -> None:
    assert prometheus.query_problem("up == 0", []) is None


def test_a_non_empty_query_result_holds_naming_the_series() -> None:
    result = [{"metric": {"__name__": "up", "job": f"j{i}"}, "value": [0, "0"]} for i in range(5)]
    problem = prometheus.query_problem("up == 0", result)
    assert problem == (
        "prometheus query 'up == 0' returned 5 series: "
        'up{job="j0"}, up{job="j1"}, up{job="j2"} and 2 more'
    )


@pytest.mark.parametrize(
    ("rules", "alerts", "blocking"),
    [
        ({}, [alert("NodeDown")], "1 alert(s) firing: NodeDown"),
        ({}, [alert("NodeDown", "pending")], None),
        ({"ignore": "Watchdog|InfoInhibitor"}, [alert("Watchdog"), alert("InfoInhibitor")], None),
        ({"ignore": "Watchdog"}, [alert("WatchdogMissing")], "1 alert(s) firing: WatchdogMissing"),
        (
            {"match": "Ceph.*"},
            [alert("NodeDown"), alert("CephHealthError")],
            "1 alert(s) firing: CephHealthError",
        ),
        ({"match": "Ceph"}, [alert("CephHealthError")], None),
        ({}, [alert("B"), alert("A"), alert("A")], "2 alert(s) firing: A, B"),
        ({}, [], None),
    ],
)
def test_firing_alerts_that_match_and_are_not_ignored_hold(
    rules: dict[str, str], alerts: list[Alert], blocking: str | None
) -> None:
    assert prometheus.alerts_problem(AlertFilter.model_validate(rules), alerts) == blocking


def test_an_invalid_regular_expression_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        AlertFilter.model_validate({"ignore": "Watchdog("})
    assert raised.value.errors()[0]["loc"] == ("ignore",)
