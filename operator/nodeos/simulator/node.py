"""One simulated node: A/B installs, reboots with downtime, boot IDs, config, injected faults.

Plain state with the time passed in (``now`` in seconds): ``advance(now)`` moves a node through
its reboot and reports what changed, so the server and the Kubernetes driver stay in step and
tests can drive time by hand.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

REBOOT_DELAY_S = 0.05
_VERSION_IN_IMAGE = re.compile(
    r":(v[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?)(?:@sha256:[0-9a-f]+)?$"
)
# What Talos applies without a reboot (Runtime.CanApplyImmediate in Talos v1.13's
# internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_runtime.go): all of .cluster and .debug,
# and these keys of .machine. A change anywhere else in .machine (env, disks, type, token,
# systemDiskEncryption, ...) needs a reboot.
_IMMEDIATE_MACHINE_KEYS = frozenset(
    {
        "time",
        "certSANs",
        "install",
        "network",
        "nodeLabels",
        "nodeAnnotations",
        "nodeTaints",
        "sysfs",
        "sysctls",
        "logging",
        "controlPlane",
        "kubelet",
        "kernel",
        "registries",
        "pods",
        "seccompProfiles",
        "features",
        "udev",
    }
)


class SimulatedError(Exception):
    """A failure the server turns into a gRPC status (code name + message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Power(enum.StrEnum):
    """Whether the node answers."""

    RUNNING = "Running"
    SHUTTING_DOWN = "ShuttingDown"  # acked a reboot, still answering for a moment
    REBOOTING = "Rebooting"
    DOWN = "Down"  # rebooted and never came back


@dataclass
class Faults:
    """What goes wrong on this node (all off by default)."""

    install_exit_code: int = 0
    never_returns: bool = False
    boot_fallback: bool = False
    reboot_seconds: float | None = None
    unavailable_calls: int = 0
    etcd_unhealthy: bool = False
    lifecycle_unimplemented: bool = False
    reject_config: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Faults from ``name[=value],...``; e.g. ``install-fails=3,slow-reboot=20``."""
        faults = cls()
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, _, value = item.partition("=")
            match key:
                case "install-fails":
                    faults.install_exit_code = int(value or 1)
                case "never-returns":
                    faults.never_returns = True
                case "boot-fallback":
                    faults.boot_fallback = True
                case "slow-reboot":
                    faults.reboot_seconds = float(value or 30)
                case "unavailable":
                    faults.unavailable_calls = int(value or 3)
                case "etcd-unhealthy":
                    faults.etcd_unhealthy = True
                case "legacy-only":
                    faults.lifecycle_unimplemented = True
                case "reject-config":
                    faults.reject_config = value or "simulated validation failure"
                case _:
                    raise ValueError(
                        f"unknown fault {key!r}; known: install-fails[=code], never-returns, "
                        "boot-fallback, slow-reboot[=seconds], unavailable[=calls], "
                        "etcd-unhealthy, legacy-only, reject-config[=message]"
                    )
        return faults


@dataclass
class Transition:
    """A change the outside world should see (the Kubernetes Node, the journal)."""

    node: str
    power: Power
    version: str
    boot_id: str


@dataclass
class SimulatedNode:
    """The OS-side state of one node."""

    name: str
    address: str
    version: str
    control_plane: bool = False
    reboot_seconds: float = 2.0
    faults: Faults = field(default_factory=Faults)
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    config: bytes = b"machine:\n  type: worker\n"
    previous_version: str | None = None
    installed_version: str | None = None
    staged_config: bytes | None = None
    # installer images pulled, per containerd ("CRI/NS_CRI", "CONTAINERD/NS_SYSTEM")
    pulled: dict[str, set[str]] = field(default_factory=dict)
    resolved_mode: str = "NO_REBOOT"  # the mode the last ApplyConfiguration ran in (AUTO resolved)
    power: Power = Power.RUNNING
    reboot_at: float = 0.0
    back_at: float | None = None
    try_revert_at: float | None = None
    try_previous_config: bytes | None = None
    reboots: int = 0
    # told when the node sets a timer (a reboot, a TRY revert), so the fleet moves along only
    # the nodes that have one: visiting every node on every call cost 2 ms at 5,000 nodes
    on_timer: Callable[[SimulatedNode], None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def member_id(self) -> int:
        """A stable etcd member ID derived from the name."""
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big") or 1

    @property
    def config_hash(self) -> str:
        """sha256 of the applied machine configuration."""
        return hashlib.sha256(self.config).hexdigest()

    # -- time ------------------------------------------------------------------------------

    def advance(self, now: float) -> Transition | None:
        """Moves the reboot along; returns a Transition when the node's power state changed."""
        if self.try_revert_at is not None and now >= self.try_revert_at:
            self.config = self.try_previous_config or self.config
            self.try_revert_at = None
        if self.power is Power.SHUTTING_DOWN and now >= self.reboot_at:
            self.power = Power.DOWN if self.faults.never_returns else Power.REBOOTING
            seconds = self.faults.reboot_seconds or self.reboot_seconds
            self.back_at = None if self.faults.never_returns else now + seconds
            return self._transition()
        if self.power is Power.REBOOTING and self.back_at is not None and now >= self.back_at:
            self._boot()
            return self._transition()
        return None

    def timed(self) -> bool:
        """Whether ``advance`` may change this node later (a reboot or a TRY revert is due)."""
        return (
            self.power is Power.SHUTTING_DOWN
            or (self.power is Power.REBOOTING and self.back_at is not None)
            or self.try_revert_at is not None
        )

    def answering(self) -> bool:
        """True when the node serves calls (call ``Fleet.advance`` first to bring it to now)."""
        if self.power in (Power.REBOOTING, Power.DOWN):
            return False
        if self.faults.unavailable_calls > 0:
            self.faults.unavailable_calls -= 1
            return False
        return True

    def _boot(self) -> None:
        if self.installed_version and not self.faults.boot_fallback:
            self.previous_version, self.version = self.version, self.installed_version
        self.installed_version = None
        if self.staged_config is not None:
            self.config, self.staged_config = self.staged_config, None
        self.boot_id = str(uuid.uuid4())
        self.power = Power.RUNNING
        self.back_at = None
        self.reboots += 1

    def _timer_set(self) -> None:
        if self.on_timer is not None:
            self.on_timer(self)

    def _transition(self) -> Transition:
        return Transition(self.name, self.power, self.version, self.boot_id)

    # -- operations ------------------------------------------------------------------------

    def check_image(self, image: str) -> str:
        """The OS version an installer image carries; INVALID_ARGUMENT when it has none."""
        if not image:
            raise SimulatedError("INVALID_ARGUMENT", "image is required")
        match = _VERSION_IN_IMAGE.search(image)
        if match is None:
            raise SimulatedError(
                "INVALID_ARGUMENT", f"cannot tell the OS version from image {image!r}"
            )
        return match.group(1)

    def check_etcd_for_upgrade(self) -> None:
        """Talos's etcd pre-check before a control plane's legacy upgrade."""
        if self.faults.etcd_unhealthy:
            raise SimulatedError(
                "FAILED_PRECONDITION",
                f"error validating etcd for upgrade: etcd member {self.name} is not healthy",
            )

    def install(self, image: str) -> list[str]:
        """Installs an image into the other A/B slot; returns installer output."""
        version = self.check_image(image)
        output = [f"pulling {image}", "verifying image", "installing to the inactive partition"]
        if self.faults.install_exit_code:
            output.append("error: installer failed: disk write error (simulated)")
            raise SimulatedInstallError(self.faults.install_exit_code, output)
        self.installed_version = version
        output.append(f"installed {self.installed_version}; it boots on the next reboot")
        return output

    def reboot(self, now: float) -> None:
        """Acknowledges a reboot; the node goes down a moment later."""
        if self.power is not Power.RUNNING:
            raise SimulatedError("FAILED_PRECONDITION", "a reboot is already in progress")
        self.power = Power.SHUTTING_DOWN
        self.reboot_at = now + REBOOT_DELAY_S
        self._timer_set()

    def rollback(self, now: float) -> None:
        """Boots the previous A/B slot."""
        if self.previous_version is None:
            raise SimulatedError("FAILED_PRECONDITION", "no previous OS to roll back to")
        self.installed_version = self.previous_version
        self.reboot(now)

    def apply_config(
        self, data: bytes, mode: str, *, dry_run: bool, now: float, try_seconds: float
    ) -> str:
        """Applies machine configuration; returns the mode details Talos would report."""
        try:
            document = yaml.safe_load(data)
        except yaml.YAMLError:
            raise SimulatedError("INVALID_ARGUMENT", "configuration is not valid YAML") from None
        if not isinstance(document, dict):
            raise SimulatedError("INVALID_ARGUMENT", "configuration must be a YAML mapping")
        if self.faults.reject_config:
            raise SimulatedError(
                "INVALID_ARGUMENT", f"config validation: {self.faults.reject_config}"
            )
        needs_reboot = self._needs_reboot(document)
        if mode == "AUTO":  # resolved before anything else, as Talos does
            mode = "REBOOT" if needs_reboot else "NO_REBOOT"
        if mode == "NO_REBOOT" and needs_reboot:
            # Talos v1.13 v1alpha1_server.go ApplyConfiguration: CanApplyImmediate's error as
            # InvalidArgument, its message followed by the diff
            raise SimulatedError(
                "INVALID_ARGUMENT",
                "this config change can't be applied in immediate mode\n"
                f"diff: machine.{needs_reboot} changed",
            )
        self.resolved_mode = mode
        if dry_run:
            return f"Dry run summary: would apply in mode {mode}" + (
                f" (machine.{needs_reboot} changed)" if needs_reboot else ""
            )
        if mode == "STAGED":
            self.staged_config = data
            return "Staged configuration to be applied after the next reboot"
        if mode == "TRY":
            self.try_previous_config, self.config = self.config, data
            self.try_revert_at = now + try_seconds
            self._timer_set()
            return f"Applied configuration; it is reverted in {try_seconds:.0f}s unless confirmed"
        if needs_reboot or mode == "REBOOT":
            self.staged_config = data
            self.reboot(now)
            return "Applied configuration with a reboot"
        self.config = data
        return "Applied configuration without a reboot"

    def _needs_reboot(self, document: dict[str, object]) -> str | None:
        current = yaml.safe_load(self.config) or {}
        new_machine = document.get("machine") or {}
        old_machine = current.get("machine") or {} if isinstance(current, dict) else {}
        if not isinstance(new_machine, dict) or not isinstance(old_machine, dict):
            return None
        for key in sorted(set(new_machine) | set(old_machine)):
            if key not in _IMMEDIATE_MACHINE_KEYS and new_machine.get(key) != old_machine.get(key):
                return str(key)
        return None


class SimulatedInstallError(SimulatedError):
    """The simulated installer exited non-zero."""

    def __init__(self, exit_code: int, output: list[str]) -> None:
        super().__init__("INSTALL_FAILED", output[-1])
        self.exit_code = exit_code
        self.output = output
