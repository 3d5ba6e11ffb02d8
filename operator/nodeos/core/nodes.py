"""What the core knows about a Kubernetes Node: a small immutable view built by the shell.

Also the node labels and annotations nodeos reads and writes, so every module names them the
same way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CORDONED_BY_ANNOTATION = "nodeos.dev/cordoned-by"
OS_VERSION_LABEL = "nodeos.dev/os-version"
REACHABLE_LABEL = "nodeos.dev/os-api-reachable"
CONFIG_HASH_ANNOTATION = "nodeos.dev/config-hash"
CONFIG_DRIFTED_ANNOTATION = "nodeos.dev/config-drifted"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
_TALOS_OS_IMAGE = re.compile(r"\((v[0-9]+\.[0-9]+\.[0-9]+[^)]*)\)")


@dataclass(frozen=True)
class NodeView:
    """One Node as the planner and state machine see it."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    unschedulable: bool
    cordoned_by: str | None
    os_image: str
    address: str | None = None
    boot_id: str = ""
    config_drifted: bool | None = None  # from the NodeOSConfig inventory; None = unknown
    uid: str = ""
    # the object version this view was made from; views that differ only in it are equal
    resource_version: str = field(default="", compare=False)

    # computed once per view (the planner asks every step, of every node)
    @functools.cached_property
    def control_plane(self) -> bool:
        """Carries the standard control-plane role label."""
        return CONTROL_PLANE_LABEL in self.labels

    @functools.cached_property
    def os_version(self) -> str | None:
        """The version in a Talos osImage such as ``Talos (v1.13.9)``."""
        match = _TALOS_OS_IMAGE.search(self.os_image)
        return match.group(1) if match else None

    @property
    def unavailable(self) -> bool:
        """Out of service: NotReady, or cordoned (by anyone)."""
        return not self.ready or self.unschedulable


def matches(selector: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    """Whether labels match a Kubernetes LabelSelector given in its API (camelCase) form."""
    match_labels = selector.get("matchLabels") or {}
    assert isinstance(match_labels, Mapping)
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    expressions = selector.get("matchExpressions") or []
    assert isinstance(expressions, list)
    for expression in expressions:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def view_of(name: str, body: Mapping[str, Any]) -> NodeView:
    """The NodeView of a Node object (as the API returns it, a plain mapping)."""
    metadata = body.get("metadata", {})
    status = body.get("status", {}) or {}
    conditions = status.get("conditions") or []
    addresses = status.get("addresses") or []
    internal = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), None)
    node_info = status.get("nodeInfo") or {}
    annotations = metadata.get("annotations") or {}
    drift = annotations.get(CONFIG_DRIFTED_ANNOTATION)
    return NodeView(
        name=name,
        labels=dict(metadata.get("labels") or {}),
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
        unschedulable=bool((body.get("spec") or {}).get("unschedulable")),
        cordoned_by=annotations.get(CORDONED_BY_ANNOTATION),
        os_image=str(node_info.get("osImage", "")),
        address=internal,
        boot_id=str(node_info.get("bootID", "")),
        config_drifted=None if drift is None else drift == "true",
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
    )
