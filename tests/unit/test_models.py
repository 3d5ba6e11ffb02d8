from __future__ import annotations

import datetime

import pytest
from pydantic import ValidationError

from nodeos.models.common import parse_duration
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import UpgradePlan


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["-5m", "5", "", "1d", "m5", "5 m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_defaults_are_the_documented_ones() -> None:
    policy = RolloutPolicy()
    assert policy.strategy.max_unavailable == 1
    assert policy.strategy.control_plane.ordering == "First"
    assert policy.drain.timeout == "10m"
    assert policy.drain.on_timeout == "Fail"
    assert policy.failure_policy.node_timeout == "30m"
    assert policy.failure_policy.max_failures == 1
    assert policy.upgrade.api == "Auto"


def plan(**spec: object) -> dict[str, object]:
    base = {"target": {"version": "v1.13.9"}, "nodeSelector": {"matchLabels": {"a": "b"}}}
    return {"apiVersion": "nodeos.dev/v1alpha1", "kind": "UpgradePlan", "spec": {**base, **spec}}


def test_model_rejects_what_the_schema_rejects() -> None:
    with pytest.raises(ValidationError, match=r"target\.version"):
        UpgradePlan.model_validate(plan(target={"version": "1.13"}))
    with pytest.raises(ValidationError, match=r"drain\.timeout"):
        UpgradePlan.model_validate(plan(drain={"timeout": "-1m"}))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        UpgradePlan.model_validate(plan(strategy={"maxUnavilable": 2}))


def test_to_api_leaves_unset_fields_out() -> None:
    parsed = UpgradePlan.model_validate(plan())
    assert parsed.spec.strategy.max_unavailable == 1
    assert parsed.to_api()["spec"]["target"] == {"version": "v1.13.9"}
