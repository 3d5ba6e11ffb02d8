"""The Kubernetes calls the rollout engine makes, as a Protocol, with the data they exchange."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class ConflictError(Exception):
    """A resourceVersion-guarded write lost a race: re-read and try again."""


class NotFoundError(Exception):
    """The object does not exist."""


class KubeApiError(Exception):
    """Any other failed request: ``status`` is the HTTP status, 0 when no answer came."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.detail = message

    @property
    def transient(self) -> bool:
        """True when the same request may succeed later (no answer, throttled, server error)."""
        return self.status == 0 or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class PodView:
    """A pod on a node being drained."""

    namespace: str
    name: str
    daemon_set: bool
    mirror: bool
    terminating: bool
    finished: bool
    labels: dict[str, str]
    empty_dir: bool


@dataclass(frozen=True)
class PodListing:
    """The pods bound to a node, and the cluster's resourceVersion they were read at."""

    pods: list[PodView]
    version: str


@dataclass(frozen=True)
class NodeHealth:
    """What the kubelet last reported for a Node, read fresh from the API."""

    ready: bool
    boot_id: str  # status.nodeInfo.bootID; "" when the kubelet reports none


class Eviction(enum.Enum):
    """What the Eviction API answered."""

    EVICTED = "Evicted"
    BLOCKED = "Blocked"  # 429: a PodDisruptionBudget does not allow it now
    GONE = "Gone"


@dataclass(frozen=True)
class EvictionOutcome:
    """An eviction's result with the API's message (names the PDB when blocked)."""

    result: Eviction
    message: str = ""


@dataclass(frozen=True)
class Cordon:
    """What a cordon call found: the node is ours now, or whose cordon was there before."""

    ours: bool
    holder: str | None = None  # the mark on a node someone else cordoned (None: no mark)


class KubeApi(Protocol):
    """The cluster, as the engine uses it."""

    async def get_plan(self, name: str) -> dict[str, Any]:
        """The UpgradePlan object (with metadata.resourceVersion); NotFoundError if absent."""
        ...

    async def patch_plan_status(
        self, name: str, status: dict[str, Any], resource_version: str
    ) -> str:
        """Replaces the plan's status if unchanged since ``resource_version``; new version."""
        ...

    async def remove_plan_annotation(self, name: str, key: str) -> None:
        """Removes one annotation from the plan."""
        ...

    async def cordon(
        self,
        node: str,
        owner: str,
        annotations: Mapping[str, str] | None = None,
        seen_version: str | None = None,
    ) -> Cordon:
        """Cordons and marks the node, unless someone else cordoned it already.

        ``annotations`` are set in the same write, and only if the cordon is ours.
        ``seen_version``: a resourceVersion at which the caller saw the node free to cordon,
        which may spare the adapter a read.
        """
        ...

    async def uncordon(
        self, node: str, owner: str, annotations: Mapping[str, str] | None = None
    ) -> bool:
        """Uncordons only if ``owner`` cordoned it; True when it did.

        ``annotations`` are set in the same write, and only if it uncordons.
        """
        ...

    async def cordoned_nodes(self, owner: str) -> list[str]:
        """The Nodes that carry ``owner``'s cordon mark, listed fresh from the API."""
        ...

    async def node_health(self, node: str) -> NodeHealth:
        """The node's Ready condition and boot ID, read fresh."""
        ...

    async def pods_on(self, node: str) -> PodListing:
        """Every pod bound to the node, with the version read at."""
        ...

    async def binds_pending(self, version: str) -> bool:
        """Whether any pod in the cluster waited for the scheduler to bind it at ``version``.

        ``version`` is a ``PodListing``'s: both answers describe the same moment.
        """
        ...

    async def evict(self, pod: PodView, grace_seconds: int | None) -> EvictionOutcome:
        """Asks the Eviction API to evict the pod (PDBs apply)."""
        ...

    async def delete_pod(self, pod: PodView, grace_seconds: int | None) -> None:
        """Deletes the pod directly (bypasses PDBs)."""
        ...

    async def event(
        self,
        kind: str,
        name: str,
        uid: str,
        api_version: str,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Records a Kubernetes Event about an object."""
        ...

    async def label_node(
        self,
        node: str,
        labels: dict[str, str | None],
        annotations: dict[str, str | None] | None = None,
    ) -> None:
        """Sets (or with None removes) node labels and annotations."""
        ...

    async def annotate_node(self, node: str, key: str, value: str | None) -> None:
        """Sets (with None removes) one annotation; NotFoundError when the Node is gone."""
        ...

    async def nodes_annotated(self, key: str) -> dict[str, str]:
        """Every Node that carries the annotation ``key``, with its value, listed fresh."""
        ...

    async def read_secret_key(self, namespace: str, name: str, key: str) -> tuple[str, bytes]:
        """A Secret's resourceVersion and one decoded value."""
        ...

    async def apply_plan(self, body: dict[str, Any]) -> None:
        """Creates the UpgradePlan, or replaces its spec when it exists."""
        ...

    async def delete_plan(self, name: str) -> None:
        """Deletes an UpgradePlan (no error when it is gone)."""
        ...

    async def read_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str | None,
        label_selector: str | None,
    ) -> list[dict[str, Any]]:
        """Objects of any kind, by name (an empty list when absent) or by label selector.

        ``KubeApiError`` 404 when the kind is not served, 403 when RBAC forbids reading it.
        """
        ...

    async def patch_config_status(self, name: str, status: dict[str, Any]) -> None:
        """Merges into a NodeOSConfig's status."""
        ...
