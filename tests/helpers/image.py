"""The operator image as a pod would run it, without a container runtime.

`buildah run --isolation chroot` runs the image's ENTRYPOINT with the arguments and environment
of the chart's Deployment, as uid 65532, with the ServiceAccount token, the cluster CA and the
talosconfig mounted where Kubernetes and the chart put them. Its network is the host's, so the
sandbox's API server (whose certificate names 127.0.0.1) stands in for the kubernetes Service.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nodeos.sandbox import cluster, image, processes

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/nodeos:test"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TALOSCONFIG_DIR = "/var/run/secrets/talos.dev"


def build_operator_image() -> tuple[str, float]:
    """Builds the repository's Dockerfile on the Debian stand-in bases; (tag, seconds)."""
    started = time.monotonic()
    image.build(REPO, TAG, build_args=image.ensure_stand_ins())
    return TAG, time.monotonic() - started


def image_config(tag: str) -> dict[str, Any]:
    """The image's OCI config (Entrypoint, Cmd, User, Env, Labels)."""
    out = subprocess.run(
        ["buildah", "inspect", "--type", "image", tag], capture_output=True, text=True, check=True
    ).stdout
    config: dict[str, Any] = json.loads(out)["OCIv1"]["config"]
    return config


@contextmanager
def working_container(tag: str) -> Iterator[str]:
    """A throwaway buildah container of the image, removed afterwards."""
    container = _from(tag)
    try:
        yield container
    finally:
        _remove(container)


def run_in_image(tag: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Runs one command in a throwaway container of the image, as the image's user."""
    with working_container(tag) as container:
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", container, "--", *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@dataclass
class ImageOperator:
    """The chart's operator container, run from the image, until ``stop``."""

    tag: str
    workdir: Path
    container: str = ""
    child: processes.Child | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "operator-image.log"

    def start(
        self,
        sandbox: cluster.Sandbox,
        deployment: dict[str, Any],
        token: str,
        namespace: str,
        talosconfig: Path,
    ) -> None:
        """Runs the Deployment's container: its args and env, the pod's mounts, the image's user."""
        spec = deployment["spec"]["template"]["spec"]
        (container_spec,) = spec["containers"]
        config = image_config(self.tag)
        user = str(config.get("User") or "")
        assert user == "65532:65532", f"the image runs as {user!r}, not the chart's 65532"
        assert spec["securityContext"]["runAsUser"] == 65532
        accounts = self._directory(
            "serviceaccount",
            {"token": token, "ca.crt": _cluster_ca(sandbox), "namespace": namespace},
        )
        talos = self._directory(
            "talos.dev", {container_spec_key(container_spec): talosconfig.read_text()}
        )
        server = sandbox.server.removeprefix("https://")
        host, port = server.rsplit(":", 1)
        env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        for variable in container_spec.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            else:  # the downward API's fields
                env[variable["name"]] = {
                    "POD_NAME": "nodeos-image-0",
                    "POD_NAMESPACE": namespace,
                    "NODE_NAME": "host",
                }[variable["name"]]
        self.container = _from(self.tag)
        command = ["buildah", "run", "--isolation", "chroot", "--user", user]
        for name, value in env.items():
            command += ["--env", f"{name}={value}"]
        # Debian's /var/run is a link to /run, which buildah's chroot mounts do not follow
        for source, target in ((accounts, SERVICE_ACCOUNT_DIR), (talos, TALOSCONFIG_DIR)):
            command += ["--volume", f"{source}:{target.replace('/var/run/', '/run/')}:ro"]
        entrypoint = list(config["Entrypoint"])
        command += [self.container, "--", *entrypoint, *container_spec["args"]]
        self.child = processes.start("operator-image", command, self.log, env=dict(os.environ))

    def stop(self) -> None:
        if self.child is not None:
            processes.stop(self.child)
        if self.container:
            _remove(self.container)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def _directory(self, name: str, files: dict[str, str]) -> Path:
        """A folder the image's non-root user can read, like a projected volume."""
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
            (folder / file_name).chmod(0o644)
        return folder


def container_spec_key(container: dict[str, Any]) -> str:
    """The talosconfig file name the container's ``--talosconfig`` argument reads."""
    for argument in container["args"]:
        if argument.startswith(f"--talosconfig={TALOSCONFIG_DIR}/"):
            return str(argument.rsplit("/", 1)[1])
    raise AssertionError(f"no --talosconfig under {TALOSCONFIG_DIR} in {container['args']}")


def rendered_deployment(manifests: str) -> dict[str, Any]:
    """The one Deployment in ``helm template`` output."""
    (deployment,) = [
        doc for doc in yaml.safe_load_all(manifests) if doc and doc.get("kind") == "Deployment"
    ]
    return dict(deployment)


def _cluster_ca(sandbox: cluster.Sandbox) -> str:
    kubeconfig = yaml.safe_load(sandbox.kubeconfig.read_text())
    data = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
    return base64.b64decode(data).decode()


def _from(tag: str) -> str:
    return subprocess.run(
        ["buildah", "from", "--pull-never", tag], capture_output=True, text=True, check=True
    ).stdout.strip()


def _remove(container: str) -> None:
    subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
