"""The node OS API as the rest of nodeos sees it: a Protocol, the plain data it returns, errors.

Nothing here imports grpc. The adapter in ``nodeos.adapters.osapi`` implements ``OsApi`` over
the Talos machine API; the engine and tests depend only on this module.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field
from typing import Literal, Protocol

UpgradeApi = Literal["Auto", "Lifecycle", "Legacy"]
RebootMode = Literal["Default", "Powercycle", "Force"]
ApplyMode = Literal["Auto", "NoReboot", "Reboot", "Staged", "Try"]

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
CONFIG_PATH = "/system/state/config.yaml"


@dataclass(frozen=True)
class NodeTarget:
    """Where to send a call: the endpoint to dial, and the node to route it to.

    ``route`` becomes the ``node`` gRPC metadata key (Talos forwards the call to that node);
    None means the endpoint itself serves the call. ``fallbacks`` are other endpoints that can
    route the call, tried in order when ``endpoint`` cannot be reached (as talosctl does).
    """

    name: str
    endpoint: str
    route: str | None = None
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class OsVersion:
    """What ``Version`` reports."""

    tag: str
    sha: str = ""
    arch: str = ""
    platform: str = ""


@dataclass(frozen=True)
class ServiceStatus:
    """One OS service from ``ServiceList``."""

    id: str
    state: str
    healthy: bool
    health_unknown: bool


@dataclass(frozen=True)
class InstallOutcome:
    """How an install went: which API did it, and whether the node reboots by itself."""

    api: Literal["Lifecycle", "Legacy"]
    reboots_itself: bool
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyOutcome:
    """What ``ApplyConfiguration`` reported."""

    mode: ApplyMode
    details: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member as ``EtcdMemberList`` lists it."""

    id: int
    hostname: str
    is_learner: bool


@dataclass(frozen=True)
class EtcdMemberStatus:
    """One member's own view from ``EtcdStatus``."""

    member_id: int
    leader: int
    is_learner: bool
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def healthy(self) -> bool:
        """A member is healthy when it reports no errors and knows a leader."""
        return not self.errors and self.leader != 0


class ErrorKind(enum.StrEnum):
    """How the caller should react to an OS API failure."""

    TRANSIENT = "Transient"  # the node is (probably) rebooting or briefly unreachable: retry
    PERMANENT = "Permanent"  # retrying the same call will fail the same way
    CREDENTIALS = "Credentials"  # TLS/auth: fix or rotate the talosconfig


class OsApiError(Exception):
    """An OS API call failed. The message names the node and says what to do; never secrets."""

    def __init__(self, node: str, kind: ErrorKind, code: str, message: str) -> None:
        super().__init__(f"{node}: {message}")
        self.node = node
        self.kind = kind
        self.code = code
        self.detail = message

    @property
    def transient(self) -> bool:
        """True when retrying later may succeed (e.g. the node is rebooting)."""
        return self.kind is ErrorKind.TRANSIENT


class InstallFailedError(OsApiError):
    """The installer ran and exited non-zero: the node keeps its current OS."""

    def __init__(self, node: str, exit_code: int, output: tuple[str, ...]) -> None:
        last = output[-1] if output else "no output"
        super().__init__(
            node,
            ErrorKind.PERMANENT,
            "InstallFailed",
            f"installer exited with code {exit_code}: {last}",
        )
        self.exit_code = exit_code
        self.output = output


class OsApi(Protocol):
    """The calls nodeos makes to a node's OS API."""

    async def version(self, node: NodeTarget) -> OsVersion:
        """The running OS version."""
        ...

    async def hostname(self, node: NodeTarget) -> str:
        """The node's hostname."""
        ...

    async def boot_id(self, node: NodeTarget, *, rebooting: bool = False) -> str:
        """The kernel's boot ID; it changes on every boot.

        ``rebooting``: the node is expected to be down (a poll while it reboots), so a failure to
        answer is not an error of the OS API.
        """
        ...

    async def read_file(self, node: NodeTarget, path: str) -> bytes:
        """A file's content through the ``Read`` call."""
        ...

    async def services(self, node: NodeTarget) -> list[ServiceStatus]:
        """The node's OS services and their health."""
        ...

    async def install(
        self, node: NodeTarget, image: str, api: UpgradeApi = "Auto"
    ) -> InstallOutcome:
        """Installs an OS image: Pull + LifecycleService.Upgrade, or the legacy Upgrade.

        Auto tries the 1.13+ flow and falls back to the legacy call when the node answers
        Unimplemented. The legacy call reboots the node by itself (``reboots_itself``).
        """
        ...

    async def reboot(self, node: NodeTarget, mode: RebootMode = "Default") -> None:
        """Asks the node to reboot; returns before the reboot happens."""
        ...

    async def rollback(self, node: NodeTarget) -> None:
        """Switches the node back to its previous OS and reboots it."""
        ...

    async def apply_configuration(
        self,
        node: NodeTarget,
        config: bytes,
        mode: ApplyMode,
        *,
        dry_run: bool = False,
        try_timeout: datetime.timedelta | None = None,
    ) -> ApplyOutcome:
        """Applies a machine configuration."""
        ...

    async def etcd_members(self, node: NodeTarget) -> list[EtcdMember]:
        """The etcd cluster's members as this control-plane node sees them."""
        ...

    async def etcd_status(self, node: NodeTarget) -> EtcdMemberStatus:
        """This control-plane node's etcd member status."""
        ...

    async def etcd_forfeit_leadership(self, node: NodeTarget) -> str:
        """Moves etcd leadership away from this node; returns the member that was leader."""
        ...

    async def close(self) -> None:
        """Closes every connection."""
        ...
