"""How a rollout proceeds: strategy, drain, health gates, windows and failure policy.

Shared by UpgradePlan (directly in its spec) and NodeOSConfig (under ``spec.rollout``), so both
kinds roll nodes through the same engine with the same knobs.
"""

from __future__ import annotations

import re
from typing import Literal

import cel as cel_language
from pydantic import ConfigDict, Field, field_validator

from nodeos.models.common import (
    ApiModel,
    Duration,
    IntOrPercent,
    LabelSelector,
    MaintenanceWindow,
    cel,
)

MAX_UNAVAILABLE_RULE = cel(
    "type(self) == int ? self >= 1 : "
    "(self.matches('^[0-9]+%$') && int(self.replace('%', '')) >= 1 "
    "&& int(self.replace('%', '')) <= 100)",
    "maxUnavailable must be an integer of at least 1 or a percentage from 1% to 100%",
)


class ControlPlanePolicy(ApiModel):
    """How control-plane nodes are handled. They always go strictly one at a time."""

    ordering: Literal["First", "Last", "Exclude"] = Field(
        default="First",
        description="First: control-plane nodes before any worker (recommended). Last: after all "
        "workers. Exclude: leave control-plane nodes alone even if the selector matches them.",
    )
    require_healthy_etcd: bool = Field(
        default=True,
        description="Before each control-plane node, require every etcd member to be healthy "
        "and not a learner, and forfeit leadership before rebooting the leader.",
    )


class OrderPolicy(ApiModel):
    """The order workers are taken in. The node running the operator always goes last."""

    priority_label: str = Field(
        default="nodeos.dev/priority",
        max_length=317,
        description="Node label with an integer priority; higher goes first. Nodes without it "
        "count as 0.",
    )
    zone_label: str = Field(
        default="topology.kubernetes.io/zone",
        max_length=317,
        description="Node label naming the zone; workers are grouped zone by zone.",
    )


class CanaryPolicy(ApiModel):
    """Upgrade a few nodes first, then wait before the rest."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.pauseAfter) && self.pauseAfter && has(self.soak))",
                    "canary: choose pauseAfter (wait for a person) or soak (wait a fixed time), "
                    "not both",
                    ".pauseAfter",
                )
            ]
        }
    )

    count: int = Field(default=0, ge=0, le=1000, description="Nodes in the canary batch.")
    pause_after: bool = Field(
        default=False,
        description="After the canary batch, wait for a person: the rest starts once the plan "
        "is annotated nodeos.dev/approve=true (the operator never writes spec, so GitOps "
        "tools leave the hold alone).",
    )
    soak: Duration | None = Field(
        default=None, description="After the canary batch, wait this long before continuing."
    )


class Strategy(ApiModel):
    """Concurrency and order."""

    max_unavailable: IntOrPercent = Field(
        default=1,
        description="Most nodes out of service at once, as a count or a percentage of the "
        "selected nodes (rounded down, at least 1). Nodes that are already NotReady or cordoned "
        "by someone else count against it.",
        json_schema_extra={"x-kubernetes-validations": [MAX_UNAVAILABLE_RULE]},
    )
    control_plane: ControlPlanePolicy = Field(default_factory=ControlPlanePolicy)
    order: OrderPolicy = Field(default_factory=OrderPolicy)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    soak_between_nodes: Duration = Field(
        default="0s",
        description="After a node is verified and uncordoned, keep its slot this long before "
        "starting another node.",
    )


class DrainPolicy(ApiModel):
    """How pods are moved off a node before it reboots (Eviction API; PDBs respected)."""

    enabled: bool = Field(default=True, description="false skips cordon-and-drain entirely.")
    timeout: Duration = Field(
        default="10m", description="How long evictions may keep failing (e.g. a PDB) in total."
    )
    on_timeout: Literal["Fail", "SkipRemaining", "ForceDelete"] = Field(
        default="Fail",
        description="When the timeout expires: Fail the node (no reboot; handled by the failure "
        "policy), SkipRemaining (reboot with the unevicted pods still on the node), or "
        "ForceDelete (delete the remaining pods, bypassing PDBs, then reboot).",
    )
    grace_period: Duration | None = Field(
        default=None, description="Overrides each pod's terminationGracePeriodSeconds."
    )
    settle: Duration = Field(
        default="2s",
        description="While the scheduler has pods waiting to be bound, an empty drain round "
        "counts only this long after the cordon: a pod placed on the node just before the "
        "cordon may still be bound to it. With no pods pending, the first empty round counts. "
        "0s always trusts the first empty round.",
    )
    ignore_daemon_sets: bool = Field(
        default=True, description="Leave DaemonSet pods in place (they would come straight back)."
    )
    delete_empty_dir_data: bool = Field(
        default=True, description="Evict pods using emptyDir volumes (their data is lost)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Evict only pods matching this selector; others stay."
    )


class HealthCheck(ApiModel):
    """A CEL expression over Kubernetes objects that must hold before and after each node."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.name) && has(self.labelSelector))",
                    "a health check reads one object by name or many by labelSelector, not both",
                    ".labelSelector",
                )
            ]
        }
    )

    description: str | None = Field(default=None, max_length=256)
    api_version: str = Field(min_length=1, max_length=128, examples=["ceph.rook.io/v1"])
    kind: str = Field(min_length=1, max_length=63, examples=["CephCluster"])
    namespace: str | None = Field(default=None, max_length=63)
    name: str | None = Field(default=None, max_length=253)
    label_selector: LabelSelector | None = None
    expression: str = Field(
        min_length=1,
        max_length=4096,
        description="CEL evaluated for each selected object, bound to `object`; the check "
        "holds when it is true for every one (and at least one matched). Example: "
        "object.status.ceph.health == 'HEALTH_OK'",
    )
    when: Literal["Before", "After", "Both"] = Field(
        default="Both", description="Before starting each node, after it is verified, or both."
    )
    timeout: Duration = Field(
        default="5m",
        description="After: how long the check may stay false once the node is back before the "
        "node fails (and is rolled back with failurePolicy.rollback). Before: the plan waits "
        "as long as it takes.",
    )

    @field_validator("expression")
    @classmethod
    def _compiles(cls, expression: str) -> str:
        try:
            cel_language.compile(expression)
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0]
            raise ValueError(f"does not compile: {first}") from None
        return expression


class AlertFilter(ApiModel):
    """Which firing alerts block progress (regular expressions anchored at both ends)."""

    match: str = Field(
        default=".*",
        max_length=1024,
        description="Regular expression on alert names (whole name, as in PromQL matchers).",
    )
    ignore: str | None = Field(
        default=None, max_length=1024, description="Regular expression of alert names to ignore."
    )

    @field_validator("match", "ignore")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return pattern


class PrometheusGate(ApiModel):
    """Block starting nodes while a Prometheus query returns results or alerts fire."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.query) || has(self.alerts)",
                    "prometheus: set query, alerts or both",
                )
            ]
        }
    )

    url: str = Field(pattern=r"^https?://", max_length=2048, examples=["http://prometheus:9090"])
    query: str | None = Field(
        default=None,
        max_length=4096,
        description="PromQL; any non-empty result blocks progress.",
    )
    alerts: AlertFilter | None = None


class FailurePolicy(ApiModel):
    """What happens when a node fails."""

    node_timeout: Duration = Field(
        default="30m",
        description="Longest a node may take from cordon to verified before it fails.",
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="Attempts per node after the first failure."
    )
    retry_backoff: Duration = Field(
        default="1m", description="Wait before the first retry; doubles each time (max 1h)."
    )
    max_failures: int = Field(
        default=1,
        ge=0,
        le=10000,
        description="Failed nodes the plan tolerates; one more and the plan stops in phase "
        "Failed until its spec changes or it is annotated nodeos.dev/retry. 0 stops at the "
        "first failure.",
    )
    rollback: bool = Field(
        default=False,
        description="Roll a node back to its previous OS (OS API Rollback) when it comes back "
        "unhealthy.",
    )
    uncordon_on_failure: bool = Field(
        default=False,
        description="Uncordon a failed node (default keeps it cordoned and says so in status).",
    )


class UpgradeMethod(ApiModel):
    """How the OS API is asked to upgrade."""

    api: Literal["Auto", "Lifecycle", "Legacy"] = Field(
        default="Auto",
        description="Lifecycle: ImageService.Pull + LifecycleService.Upgrade + Reboot (Talos "
        "1.13+). Legacy: MachineService.Upgrade. Auto: Lifecycle, falling back to Legacy when "
        "the node does not implement it.",
    )
    reboot_mode: Literal["Default", "Powercycle"] = Field(default="Default")


class RolloutPolicy(ApiModel):
    """Every knob of a rolling change, shared by UpgradePlan and NodeOSConfig."""

    strategy: Strategy = Field(default_factory=Strategy)
    drain: DrainPolicy = Field(default_factory=DrainPolicy)
    health_checks: list[HealthCheck] = Field(default_factory=list, max_length=16)
    prometheus: PrometheusGate | None = None
    maintenance_windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        max_length=16,
        description="When set, nodes start only inside one of these windows.",
    )
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    upgrade: UpgradeMethod = Field(default_factory=UpgradeMethod)
