"""NodeOSConfig: the desired OS, configuration and OS API access of a pool of nodes."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from pydantic import Field

from nodeos.models.common import (
    NON_EMPTY_SELECTOR_RULE,
    ApiModel,
    Condition,
    Duration,
    LabelSelector,
)
from nodeos.models.nodeapi import MachineConfig, OsApiAccess
from nodeos.models.resource import CrdInfo, PrinterColumn
from nodeos.models.rollout import RolloutPolicy
from nodeos.models.upgradeplan import Target


class InventoryPolicy(ApiModel):
    """How often the fleet's OS state is read."""

    refresh_interval: Duration = Field(default="5m")
    concurrency: int = Field(default=10, ge=1, le=200, description="Nodes queried at once.")


class NodeOSConfigSpec(ApiModel):
    """The desired state of a pool of nodes."""

    node_selector: LabelSelector = Field(
        description="Nodes this configuration manages.",
        json_schema_extra={"x-kubernetes-validations": [NON_EMPTY_SELECTOR_RULE]},
    )
    os: Target | None = Field(
        default=None, description="Desired OS; nodes on another version are rolled to it."
    )
    config: MachineConfig | None = None
    os_api: OsApiAccess
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy,
        description="How version changes and reboot-requiring configuration changes roll out.",
    )
    inventory: InventoryPolicy = Field(default_factory=InventoryPolicy)
    paused: bool = False


class VersionCount(ApiModel):
    """Nodes running one OS version."""

    version: str
    count: int


class InventoryCounts(ApiModel):
    """The fleet at the last inventory."""

    nodes: int = 0
    up_to_date: int = 0
    drifted: int = 0
    unreachable: int = 0


class NodeOSConfigStatus(ApiModel):
    """What the operator saw and did; written only by the operator."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    counts: InventoryCounts = Field(default_factory=InventoryCounts)
    versions: list[VersionCount] = Field(default_factory=list)
    config_hash: str | None = Field(default=None, description="Hash of the desired patches.")
    upgrade_plan: str | None = Field(default=None, description="The UpgradePlan this owns.")
    last_inventory: datetime.datetime | None = None
    message: str | None = Field(default=None, max_length=1024)


class NodeOSConfig(ApiModel):
    """The OS, configuration and OS API access a pool of nodes should have."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="NodeOSConfig",
        plural="nodeosconfigs",
        singular="nodeosconfig",
        short_names=("nosc", "osconfig"),
        categories=("nodeos",),
        printer_columns=(
            PrinterColumn("Version", "string", ".spec.os.version"),
            PrinterColumn("Nodes", "integer", ".status.counts.nodes"),
            PrinterColumn("Up-To-Date", "integer", ".status.counts.upToDate"),
            PrinterColumn("Drifted", "integer", ".status.counts.drifted"),
            PrinterColumn("Unreachable", "integer", ".status.counts.unreachable"),
            PrinterColumn("Plan", "string", ".status.upgradePlan", priority=1),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
        ),
    )

    api_version: str = "nodeos.dev/v1alpha1"
    kind: str = "NodeOSConfig"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: NodeOSConfigSpec
    status: NodeOSConfigStatus | None = None
