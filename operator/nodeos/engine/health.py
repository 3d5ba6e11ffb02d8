"""The health-check gate: reads the objects each check names, ``core.healthchecks`` judges."""

from __future__ import annotations

from nodeos.core import healthchecks
from nodeos.core.healthchecks import Verdict
from nodeos.models.rollout import HealthCheck
from nodeos.ports.kube import KubeApi, KubeApiError


async def first_failing(
    kube: KubeApi, checks: list[HealthCheck], moment: str
) -> tuple[HealthCheck, Verdict] | None:
    """The first check for ``moment`` (Before or After) that does not hold, with why."""
    for index, check in enumerate(checks):
        if not healthchecks.applies(check, moment):
            continue
        verdict = await _judge(kube, index, check)
        if not verdict.healthy:
            return check, verdict
    return None


async def _judge(kube: KubeApi, index: int, check: HealthCheck) -> Verdict:
    selector = None
    if check.label_selector is not None:
        selector = check.label_selector.to_query()
    try:
        objects = await kube.read_objects(
            check.api_version, check.kind, check.namespace, check.name, selector
        )
    except KubeApiError as error:
        hint = " (grant the operator get/list on it: chart value healthCheckAccess)" * (
            error.status == 403
        )
        return Verdict(
            False,
            f"{healthchecks.label(index, check)}: cannot read {check.kind}: {error}{hint}",
            error=True,
        )
    return healthchecks.evaluate(index, check, objects)
