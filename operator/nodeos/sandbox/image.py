"""Builds the operator image from the repository's Dockerfile with buildah, without Docker.

Where no registry is reachable (the project's CI), the Dockerfile's two base images are replaced
by stand-ins made from Debian packages with mmdebstrap: a build base (python3, pip, venv) and a
runtime base (python3 and tzdata only, so the image has no pip). Each stand-in is tagged with a
hash of what went into it and made once per machine; buildah keeps it, and its layer cache, in
its own storage outside the repository. Builds use ``--isolation chroot``, the one isolation
that works on machines where a container runtime cannot create cgroups.

Another CPU's image (arm64 on amd64) needs no emulation: the Dockerfile's build stage runs on
this machine and fetches the target's wheels, and the runtime stage only copies. Its runtime
stand-in is the same Debian packages unpacked for that CPU (``--variant=extract``: their
maintainer scripts would need the foreign CPU to run).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ProgressFn = Callable[[str], None]

DEBIAN_SUITE = "bookworm"  # its python3 is CPython 3.11, as requirements/runtime.txt is locked
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class StandIn:
    """A stand-in base image: what the Dockerfile's build argument ``argument`` names."""

    argument: str
    role: str
    packages: tuple[str, ...]
    trusts_this_machine: bool = False  # carries this machine's CA bundle, for pip behind a proxy


STAND_INS = (
    StandIn("BUILD_IMAGE", "build", ("python3", "python3-venv"), trusts_this_machine=True),
    StandIn("RUNTIME_IMAGE", "runtime", ("python3", "tzdata")),
)


class ImageError(RuntimeError):
    """A tool is missing or a build step failed; the message says which and why."""


def require_tools(*names: str) -> None:
    """Raises naming the Debian packages to install when a tool is not on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise ImageError(
            f"{', '.join(missing)} not found on PATH: install the Debian packages "
            f"({'apt-get install ' + ' '.join(missing)})"
        )


def ca_bundle() -> Path:
    """This machine's CA bundle (``$SSL_CERT_FILE`` or Debian's), which pip in a build trusts."""
    return Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")


def native_arch() -> str:
    """This machine's CPU in Debian's and OCI's words (``amd64``, ``arm64``)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def stand_in_tag(stand_in: StandIn, arch: str, mirror: str = DEFAULT_MIRROR) -> str:
    """``localhost/nodeos-standin-<role>-<arch>:<hash of suite, packages, mirror, CA bundle>``."""
    digest = hashlib.sha256("\n".join((DEBIAN_SUITE, mirror, *stand_in.packages)).encode())
    if stand_in.trusts_this_machine and ca_bundle().is_file():
        digest.update(ca_bundle().read_bytes())
    return f"localhost/nodeos-standin-{stand_in.role}-{arch}:{digest.hexdigest()[:12]}"


def image_exists(reference: str) -> bool:
    """Whether buildah's storage holds an image by that name."""
    found = subprocess.run(
        ["buildah", "inspect", "--type", "image", reference], capture_output=True, check=False
    )
    return found.returncode == 0


def ensure_stand_ins(
    arch: str | None = None, mirror: str | None = None, say: ProgressFn | None = None
) -> dict[str, str]:
    """Makes the stand-in bases that are missing; returns build argument -> image name.

    The build base is always this machine's; the runtime base is ``arch``'s (default: ours).
    """
    require_tools("buildah", "mmdebstrap")
    mirror = mirror or os.environ.get("NODEOS_DEBIAN_MIRROR") or DEFAULT_MIRROR
    say = say or _print_progress
    arguments = {}
    for stand_in in STAND_INS:
        on = native_arch() if stand_in.role == "build" else (arch or native_arch())
        tag = stand_in_tag(stand_in, on, mirror)
        if not image_exists(tag):
            say(f"making the {stand_in.role} stand-in base for {on} from Debian ({tag})")
            _make_stand_in(stand_in, on, tag, mirror)
        arguments[stand_in.argument] = tag
    return arguments


def _make_stand_in(stand_in: StandIn, arch: str, tag: str, mirror: str) -> None:
    foreign = arch != native_arch()
    with tempfile.TemporaryDirectory(prefix="nodeos-standin-") as workdir:
        rootfs = Path(workdir) / "rootfs.tar"
        _run(
            [
                "mmdebstrap",
                "--variant=extract" if foreign else "--variant=minbase",
                f"--architectures={arch}",
                "--quiet",
                f"--include={','.join(stand_in.packages)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            f"mmdebstrap for the {stand_in.role} stand-in",
        )
        container = _run(["buildah", "from", "scratch"], "buildah from scratch").strip()
        try:
            _run(["buildah", "add", container, str(rootfs), "/"], "buildah add")
            settings = ["--env", PATH_ENV, "--arch", arch, "--os", "linux"]
            if arch == "arm64":  # buildah matches linux/arm64 to an image only with its variant
                settings += ["--variant", "v8"]
            if stand_in.trusts_this_machine and ca_bundle().is_file():
                # pip in a venv trusts its own certifi bundle unless told otherwise
                trusted = "/etc/ssl/certs/ca-certificates.crt"
                _run(["buildah", "copy", container, str(ca_bundle()), trusted], "buildah copy")
                settings += ["--env", f"PIP_CERT={trusted}"]
            _run(["buildah", "config", *settings, container], "buildah config")
            _run(["buildah", "commit", "--quiet", container, tag], "buildah commit")
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def build(
    context: Path,
    tag: str,
    *,
    build_args: dict[str, str] | None = None,
    platforms: Sequence[str] = (),
    say: ProgressFn | None = None,
) -> None:
    """``buildah bud`` of ``context``'s Dockerfile, its output shown as it goes.

    With several ``platforms`` the result is a manifest list named ``tag``.
    """
    require_tools("buildah")
    say = say or _print_progress
    arguments = {
        # buildah 1.28 leaves BUILDPLATFORM to the target's when --platform is given
        "BUILDPLATFORM": f"linux/{native_arch()}",
        "REVISION": _git(context, "rev-parse", "--short", "HEAD"),
        "CREATED": _git(context, "log", "-1", "--format=%cI"),
        **(build_args or {}),
    }
    command = ["buildah", "bud", "--isolation", "chroot", "--layers"]
    for name, value in arguments.items():
        command += ["--build-arg", f"{name}={value}"]
    if len(platforms) > 1:
        command += ["--platform", ",".join(platforms), "--manifest", tag]
    else:
        command += [*(["--platform", platforms[0]] if platforms else []), "--tag", tag]
    command += ["--file", str(context / "Dockerfile"), str(context)]
    say(f"building {tag} from {context / 'Dockerfile'}")
    code = subprocess.run(command, stdout=sys.stderr, check=False).returncode
    if code != 0:
        raise ImageError(f"buildah bud failed (exit {code}); its output is above")


def _git(context: Path, *args: str) -> str:
    """One line of git's answer about the checkout, or "unknown" outside one."""
    answer = subprocess.run(
        ["git", "-C", str(context), *args], capture_output=True, text=True, check=False
    ).stdout.strip()
    return answer or "unknown"


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def _print_progress(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def build_on_stand_ins(
    context: Path, tag: str, platforms: Sequence[str] = (), say: ProgressFn | None = None
) -> None:
    """The Dockerfile on stand-in bases; several platforms make a manifest list ``tag``.

    Each platform is built on its own runtime stand-in (one build argument cannot name a
    different local image per CPU), then the images are gathered into the list.
    """
    if len(platforms) <= 1:
        arch = platforms[0].split("/")[1] if platforms else None
        build(context, tag, build_args=ensure_stand_ins(arch, say=say), platforms=platforms)
        return
    built = []
    for target in platforms:
        arch = target.split("/")[1]
        per_arch = f"{tag}-{arch}"
        build(context, per_arch, build_args=ensure_stand_ins(arch, say=say), platforms=[target])
        built.append(per_arch)
    subprocess.run(["buildah", "manifest", "rm", tag], capture_output=True, check=False)
    _run(["buildah", "manifest", "create", tag], "buildah manifest create")
    for per_arch in built:
        _run(["buildah", "manifest", "add", tag, per_arch], "buildah manifest add")
