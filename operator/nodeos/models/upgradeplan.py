"""UpgradePlan: roll the selected nodes to one OS version, this way. Spec and status."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from nodeos.models.common import (
    NON_EMPTY_SELECTOR_RULE,
    ApiModel,
    Condition,
    LabelSelector,
    cel,
)
from nodeos.models.nodeapi import MachineConfig, OsApiAccess
from nodeos.models.resource import CrdInfo, PrinterColumn
from nodeos.models.rollout import RolloutPolicy

VERSION_PATTERN = r"^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"
IMAGE_PATTERN = r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*(:[\w][\w.-]{0,127})?(@sha256:[a-f0-9]{64})?$"  # noqa: E501

PlanPhase = Literal["Pending", "Queued", "Progressing", "Paused", "Waiting", "Completed", "Failed"]
NodePhase = Literal[
    "Pending",
    "Cordoning",
    "Draining",
    "Upgrading",
    "Rebooting",
    "Verifying",
    "Uncordoning",
    "Soaking",
    "Done",
    "Failed",
    "RollingBack",
    "RolledBack",
]


class Target(ApiModel):
    """The OS the nodes should end up running."""

    version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        max_length=64,
        description="OS version as the OS API reports it, e.g. v1.13.9. May be left out only "
        "when the plan rolls machineConfig alone (nodes keep their version).",
        examples=["v1.13.9"],
    )
    image: str | None = Field(
        default=None,
        pattern=IMAGE_PATTERN,
        max_length=512,
        description="Installer image. Default: the node's current installer image with its tag "
        "replaced by version (keeps a factory schematic).",
        examples=["ghcr.io/siderolabs/installer:v1.13.9"],
    )


class UpgradePlanSpec(RolloutPolicy):
    """What to roll out, to which nodes, and how."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.target.version) || has(self.machineConfig)",
                    "target.version is required unless the plan rolls machineConfig",
                    ".target.version",
                )
            ]
        }
    )

    target: Target
    node_selector: LabelSelector = Field(
        description="Nodes this plan upgrades. A node is claimed by one plan at a time; "
        "overlapping plans queue (condition Queued).",
        json_schema_extra={"x-kubernetes-validations": [NON_EMPTY_SELECTOR_RULE]},
    )
    paused: bool = Field(
        default=False, description="Start no new nodes; nodes already in flight finish."
    )
    machine_config: MachineConfig | None = Field(
        default=None,
        description="Machine-config patches applied to each node during its upgrade (staged, "
        "then the reboot applies them). Usually set by a NodeOSConfig.",
    )
    os_api: OsApiAccess | None = Field(
        default=None,
        description="How to reach these nodes' OS API. Default: the operator's talosconfig.",
    )


class NodeProgress(ApiModel):
    """One node's progress in this plan, kept on the Node as an annotation (a few hundred bytes)."""

    name: str = Field(max_length=253)
    phase: NodePhase
    since: datetime.datetime | None = Field(default=None, description="When the phase began.")
    started_at: datetime.datetime | None = Field(
        default=None, description="When the current attempt began (for the node timeout)."
    )
    attempt: int | None = Field(default=None, ge=0, description="Retries so far (absent = 0).")
    boot_id: str | None = Field(
        default=None, max_length=64, description="Boot ID before the reboot (proves a reboot)."
    )
    from_version: str | None = Field(default=None, max_length=64)
    deadline: datetime.datetime | None = Field(
        default=None, description="When the current phase times out."
    )
    retry_at: datetime.datetime | None = Field(default=None)
    reason: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=1024)
    cordoned_by_us: bool | None = Field(default=None, description="nodeos cordoned this node.")
    target: str | None = Field(
        default=None,
        max_length=64,
        description="The version this attempt installs (a later spec edit does not change it).",
    )
    reboot_requested_at: datetime.datetime | None = Field(
        default=None,
        description="When the node acknowledged the reboot (or an install that reboots by "
        "itself); absent while no reboot was asked for in this phase.",
    )
    unconfirmed: bool | None = Field(
        default=None,
        description="The install call's outcome is unknown (its reply was lost, or the operator "
        "restarted during it): the reboot decides, and the version is checked after it.",
    )
    node_uid: str | None = Field(
        default=None,
        max_length=64,
        description="The Node object's UID when the attempt started: a Node deleted and "
        "registered again under the same name is a new node to this plan.",
    )
    redrain: bool | None = Field(
        default=None,
        description="Someone uncordoned the node mid-upgrade; it was cordoned again and must "
        "be found empty by a drain round before the install or reboot.",
    )
    interrupted: int | None = Field(
        default=None,
        ge=0,
        description="Attempts ended by an unconfirmed install; they do not count as retries.",
    )


class Counts(ApiModel):
    """How many selected nodes are where."""

    total: int = 0
    updated: int = 0
    in_progress: int = 0
    failed: int = 0
    pending: int = 0


class Preview(ApiModel):
    """The order the plan will take nodes in, computed before anything starts."""

    batches: list[list[str]] = Field(
        default_factory=list, description="The first batches (at most 20) in order."
    )
    total_batches: int = 0


class UpgradePlanStatus(ApiModel):
    """Where the rollout stands; written only by the operator."""

    phase: PlanPhase = "Pending"
    observed_generation: int | None = None
    observed_target: str | None = Field(
        default=None, description="The target version the node records refer to."
    )
    conditions: list[Condition] = Field(default_factory=list)
    progress: str | None = Field(default=None, description="updated/total, for kubectl get.")
    counts: Counts = Field(default_factory=Counts)
    in_flight: list[str] = Field(
        default_factory=list,
        description="Nodes holding a slot. Written before a node is touched; the concurrency "
        "ledger.",
    )
    nodes: list[NodeProgress] = Field(
        default_factory=list,
        description="Written only by earlier nodeos versions: node records now live on the Nodes "
        "(annotation <plan>.progress.nodeos.dev/record); the next write moves and clears these.",
    )
    preview: Preview | None = None
    next_window: datetime.datetime | None = None
    eta: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    message: str | None = Field(default=None, max_length=1024)


class UpgradePlan(ApiModel):
    """Roll the selected nodes to one OS version, safely and in order."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="UpgradePlan",
        plural="upgradeplans",
        singular="upgradeplan",
        short_names=("uplan", "uplans"),
        categories=("nodeos",),
        printer_columns=(
            PrinterColumn("Phase", "string", ".status.phase"),
            PrinterColumn("Target", "string", ".spec.target.version"),
            PrinterColumn("Updated", "string", ".status.progress", "updated/total"),
            PrinterColumn("In-Progress", "integer", ".status.counts.inProgress"),
            PrinterColumn("Failed", "integer", ".status.counts.failed"),
            PrinterColumn("Paused", "boolean", ".spec.paused", priority=1),
            PrinterColumn("Message", "string", ".status.message", priority=1),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
        ),
    )

    api_version: str = "nodeos.dev/v1alpha1"
    kind: str = "UpgradePlan"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: UpgradePlanSpec
    status: UpgradePlanStatus | None = None
