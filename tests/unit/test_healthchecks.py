"""CEL health checks: what users write, and every way a check can fail to say "healthy"."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nodeos.core import healthchecks
from nodeos.models.rollout import HealthCheck

DEPLOY = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "front"}},
    "spec": {"replicas": 3},
    "status": {
        "readyReplicas": 3,
        "phase": "Ready",
        "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "True"},
        ],
    },
}


def check(expression: str, **fields: Any) -> HealthCheck:
    return HealthCheck.model_validate(
        {"apiVersion": "apps/v1", "kind": "Deployment", "expression": expression, **fields}
    )


@pytest.mark.parametrize(
    ("expression", "healthy"),
    [
        ("object.status.readyReplicas >= object.spec.replicas", True),
        ("has(object.status.readyReplicas) && object.status.readyReplicas == 3", True),
        ("!has(object.status.unavailableReplicas)", True),
        ("object.status.conditions.exists(c, c.type == 'Available' && c.status == 'True')", True),
        ("object.status.conditions.all(c, c.status == 'True')", True),
        ("object.status.conditions.exists_one(c, c.type == 'Progressing')", True),
        ("object.status.conditions.filter(c, c.status == 'False').size() == 0", True),
        ("size(object.status.conditions) == 2", True),
        ("object.metadata.name.startsWith('we') && object.metadata.name.endsWith('b')", True),
        ("object.metadata.labels['tier'] in ['front', 'back']", True),
        ("object.status.phase.matches('^Rea')", True),
        ("object.status.phase.lowerAscii() == 'ready'", True),
        ("object.metadata.namespace.upperAscii() == 'SHOP'", True),
        ("object.status.phase == 'Degraded'", False),
        ("object.status.conditions.all(c, c.type == 'Available')", False),
    ],
)
def test_expressions_users_write(expression: str, healthy: bool) -> None:
    verdict = healthchecks.evaluate(0, check(expression), [DEPLOY])
    assert (verdict.healthy, verdict.error) == (healthy, False), verdict.message


def test_every_selected_object_must_hold() -> None:
    broken = {**DEPLOY, "metadata": {"name": "api", "namespace": "shop"}, "status": {}}
    verdict = healthchecks.evaluate(
        2, check("has(object.status.readyReplicas)", description="apps ready"), [DEPLOY, broken]
    )
    assert not verdict.healthy and not verdict.error
    assert verdict.message.startswith("healthChecks[2] (apps ready): false for Deployment shop/api")


@pytest.mark.parametrize(
    ("expression", "objects", "cause"),
    [
        ("object.status.missing == 1", [DEPLOY], "cannot evaluate on Deployment shop/web"),
        ("object.spec.replicas", [DEPLOY], "gave 3, not true or false"),
        ("object.status.readyReplicas / 0 > 1", [DEPLOY], "cannot evaluate"),
        ("true", [], "no Deployment object matched"),
    ],
)
def test_a_check_that_cannot_be_evaluated_never_passes(
    expression: str, objects: list[dict[str, Any]], cause: str
) -> None:
    verdict = healthchecks.evaluate(0, check(expression), objects)
    assert not verdict.healthy and verdict.error
    assert cause in verdict.message


def test_an_expression_that_does_not_compile_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        check("object.status ==")
    error = raised.value.errors()[0]
    assert error["loc"] == ("expression",)
    assert "does not compile" in error["msg"]


@pytest.mark.parametrize(
    ("when", "before", "after"),
    [("Before", True, False), ("After", False, True), ("Both", True, True)],
)
def test_when_a_check_runs(when: str, before: bool, after: bool) -> None:
    c = check("true", when=when)
    assert (healthchecks.applies(c, "Before"), healthchecks.applies(c, "After")) == (before, after)
