"""How nodes are reached (OS API access) and configured (machine-config patches).

Shared by NodeOSConfig and UpgradePlan: a plan generated from a NodeOSConfig carries the same
access and patches, so the rollout engine reaches and changes nodes the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from nodeos.models.common import ApiModel, Duration, SecretKeyReference, cel

ApplyMode = Literal["Auto", "NoReboot", "Reboot", "Staged", "Try"]


class MachineConfig(ApiModel):
    """Machine-configuration patches applied through the OS API's ApplyConfiguration."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.mode) && self.mode == 'Try') || !has(self.tryTimeout)",
                    "tryTimeout applies only to mode Try",
                    ".tryTimeout",
                )
            ]
        }
    )

    patches: list[Annotated[str, Field(min_length=1, max_length=65536)]] = Field(
        default_factory=list,
        max_length=64,
        description="Strategic-merge patches (YAML documents) applied in order on top of each "
        "node's current machine configuration.",
    )
    mode: ApplyMode = Field(
        default="Auto",
        description="Auto: the node decides; changes that need a reboot are rolled through the "
        "engine (cordon, drain, apply, reboot, verify). NoReboot: apply live, refuse changes "
        "that need a reboot. Reboot: always roll with a reboot. Staged: apply at the next "
        "reboot. Try: apply live and revert after tryTimeout unless confirmed.",
    )
    try_timeout: Duration | None = None


class OsApiAccess(ApiModel):
    """How the operator reaches the nodes' OS API."""

    port: int = Field(default=50000, ge=1, le=65535)
    endpoints: Literal["Node", "ControlPlane"] = Field(
        default="ControlPlane",
        description="Node: dial each node's InternalIP. ControlPlane: dial healthy control-plane "
        "nodes and route to the target with the `node` metadata key (works when workers are "
        "not reachable directly).",
    )
    talosconfig_secret: SecretKeyReference = Field(
        description="Secret key holding a talosconfig with an os:admin client certificate; "
        "watched, so rotated certificates are picked up without a restart."
    )
    timeout: Duration = Field(default="10s", description="Deadline of each OS API call.")
