"""The operator's settings: each a ``nodeos run`` flag with a ``NODEOS_*`` environment default.

Every setting is declared once (``SETTINGS``) and validated in one place (``OperatorConfig``, a
pydantic model): a flag wins over its environment variable, which wins over the default. A bad
value gives one line naming the flag, the variable and what is wrong (``SettingsError``), and
``nodeos run`` exits 2. Nothing is converted while the parser is built, so ``nodeos --help``
works whatever the environment holds.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Port = Annotated[int, Field(ge=1, le=65535)]
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class SettingsError(ValueError):
    """One or more settings are invalid; ``lines`` says which and why, one per setting."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


class OperatorConfig(BaseModel):
    """Everything ``nodeos run`` needs to know."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: Path | None = None
    talosconfig: Path = Path("/var/run/secrets/talos.dev/config")
    os_api_endpoints: Literal["ControlPlane", "Node"] = "ControlPlane"
    os_api_port: Port = 50000
    os_api_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # where ImageService.Pull and LifecycleService.Upgrade keep the installer image
    os_api_containerd: Literal["CRI", "System"] = "CRI"
    metrics_port: Port = 8080
    health_port: Port = 8081
    namespace: str = Field(default="nodeos-system", min_length=1, max_length=63)
    # where plans and NodeOSConfigs may keep osApi.talosconfigSecret (empty: ``namespace``)
    secret_namespaces: tuple[Annotated[str, Field(pattern=_NAMESPACE)], ...] = ()
    lease_name: str = Field(default="nodeos-operator", min_length=1, max_length=253)
    identity: str = Field(default="", min_length=1)
    leader_election: bool = True
    node_name: str | None = None
    pod_name: str | None = None
    poll_s: float = Field(default=0.5, gt=0, le=60)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("secret_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def readable_secret_namespaces(self) -> tuple[str, ...]:
        """Namespaces whose Secrets an osApi reference may name."""
        return self.secret_namespaces or (self.namespace,)

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def own_pod(self) -> tuple[str, str] | None:
        """(namespace, name) of the operator's own pod, never evicted."""
        return (self.namespace, self.pod_name) if self.pod_name else None


@dataclass(frozen=True)
class Setting:
    """One setting: its flag, environment variable, model field and help."""

    flag: str
    env: str | None
    field: str
    help: str
    choices: tuple[str, ...] = ()
    switch: bool = False  # a flag without a value


SETTINGS = (
    Setting("--kubeconfig", "KUBECONFIG", "kubeconfig", "kubeconfig file (default: in-cluster)"),
    Setting(
        "--talosconfig",
        "NODEOS_TALOSCONFIG",
        "talosconfig",
        "talosconfig with an os:admin certificate; re-read when it changes",
    ),
    Setting(
        "--os-api-endpoints",
        "NODEOS_OS_API_ENDPOINTS",
        "os_api_endpoints",
        "ControlPlane: dial the talosconfig's endpoints and route by node; Node: dial each "
        "node's own address",
        choices=("ControlPlane", "Node"),
    ),
    Setting("--os-api-port", "NODEOS_OS_API_PORT", "os_api_port", "OS API port on each node"),
    Setting(
        "--os-api-timeout",
        "NODEOS_OS_API_TIMEOUT",
        "os_api_timeout_s",
        "seconds before an OS API call (other than an install) gives up",
    ),
    Setting(
        "--os-api-containerd",
        "NODEOS_OS_API_CONTAINERD",
        "os_api_containerd",
        "containerd that pulls and installs the installer image on Talos >= 1.13: CRI (the "
        "kubelet's, talosctl's default; can use its registry mirrors) or System (Talos's own)",
        choices=("CRI", "System"),
    ),
    Setting("--metrics-port", "NODEOS_METRICS_PORT", "metrics_port", "Prometheus /metrics port"),
    Setting("--health-port", "NODEOS_HEALTH_PORT", "health_port", "/healthz port"),
    Setting("--namespace", "POD_NAMESPACE", "namespace", "namespace of the leader Lease"),
    Setting("--lease-name", "NODEOS_LEASE_NAME", "lease_name", "name of the leader Lease"),
    Setting(
        "--secret-namespaces",
        "NODEOS_SECRET_NAMESPACES",
        "secret_namespaces",
        "comma-separated namespaces whose Secrets osApi.talosconfigSecret may name (default: "
        "the operator's namespace); a reference elsewhere is refused without reading it",
    ),
    Setting(
        "--identity",
        "POD_NAME",
        "identity",
        "this replica's name in the Lease (default: the pod name, else host-pid)",
    ),
    Setting(
        "--no-leader-election",
        None,
        "leader_election",
        "run without the Lease (only when exactly one replica runs)",
        switch=True,
    ),
    Setting("--node-name", "NODE_NAME", "node_name", "the node the operator runs on (goes last)"),
    Setting("--pod-name", "POD_NAME", "pod_name", "the operator's pod (never evicted)"),
    Setting(
        "--log-level",
        "NODEOS_LOG_LEVEL",
        "log_level",
        "DEBUG, INFO (node and plan changes), WARNING (retries), ERROR (needs a person)",
    ),
    Setting(
        "--log-format",
        "NODEOS_LOG_FORMAT",
        "log_format",
        "text, or json (one object per line)",
        choices=("text", "json"),
    ),
    Setting(
        "--poll-interval",
        "NODEOS_POLL",
        "poll_s",
        "seconds between OS API polls while a node reboots",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the flags of ``nodeos run`` (values are checked later, in one place)."""
    defaults = OperatorConfig.model_fields
    for setting in SETTINGS:
        if setting.switch:
            parser.add_argument(setting.flag, action="store_true", default=None, help=setting.help)
            continue
        default = defaults[setting.field].default
        where = f"env {setting.env}; " if setting.env else ""
        shown = "" if default in (None, "") else f"default {default}"
        parser.add_argument(
            setting.flag,
            default=None,
            metavar=setting.field.upper().removesuffix("_S"),
            help=f"{setting.help} ({where}{shown})".replace("; )", ")").replace(" ()", ""),
        )


def from_arguments(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> OperatorConfig:
    """The settings from flags, then environment variables, then defaults; or SettingsError."""
    environ = dict(os.environ) if environ is None else environ
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for setting in SETTINGS:
        value = getattr(args, _dest(setting.flag), None)
        if setting.switch:
            if value:
                raw[setting.field] = False
                origin[setting.field] = setting.flag
            continue
        if value is not None:
            raw[setting.field], origin[setting.field] = value, setting.flag
        elif setting.env and environ.get(setting.env):
            raw[setting.field] = environ[setting.env]
            origin[setting.field] = setting.env
    raw.setdefault("identity", f"{socket.gethostname()}-{os.getpid()}")
    try:
        return OperatorConfig.model_validate(raw)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0])
            flag = next((s.flag for s in SETTINGS if s.field == field), field)
            where = origin.get(field, flag)
            given = f"{where}={raw.get(field, '')!s}"
            if where != flag:
                given += f" ({flag})"
            lines.append(f"{given}: {_plain(problem['msg'])}")
        raise SettingsError(lines) from None


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _plain(message: str) -> str:
    return message.replace("Input should be", "must be").replace("input should be", "must be")
