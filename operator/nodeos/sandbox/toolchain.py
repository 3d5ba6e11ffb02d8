"""Builds the sandbox's Go binaries from their wrapper modules into a per-version cache.

Binaries land in ``<cache>/<component>-<version>-<key>/`` where the key hashes the wrapper's
``go.mod``/``go.sum``, the build flags and the Go version, so a changed pin rebuilds and an
unchanged one never does. A build goes to a temporary folder first and is renamed into place
only when every binary exists, so an interrupted build leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from nodeos.sandbox.components import ALL_COMPONENTS, Component

ProgressFn = Callable[[str], None]

_PROGRESS_INTERVAL_S = 20.0


class BuildError(RuntimeError):
    """A component failed to build; the message carries the tail of the Go output."""


def cache_root() -> Path:
    """Where built binaries are kept: ``$NODEOS_CACHE_DIR`` or ``~/.cache/nodeos``."""
    explicit = os.environ.get("NODEOS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nodeos"


def go_version() -> str:
    """The Go toolchain version that would build the binaries (e.g. ``go1.26.8``)."""
    if shutil.which("go") is None:
        raise BuildError(
            "the 'go' command is not on PATH; the sandbox builds Kubernetes from Go modules "
            "and needs Go >= 1.26.7"
        )
    out = subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True, env=_go_env({})
    )
    return out.stdout.strip()


def build_key(component: Component, go: str) -> str:
    """A short hash of everything that changes the built binaries."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((component.module_dir / name).read_bytes())
    for source in sorted(component.module_dir.glob("*.go")):  # our own Go programs
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for part in (*component.packages, *component.binaries, *component.ldflags, *component.tags, go):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def install_dir(component: Component, go: str) -> Path:
    """The cache folder holding this component's binaries."""
    return cache_root() / f"{component.name}-{component.version}-{build_key(component, go)}"


def is_built(component: Component, go: str) -> bool:
    """True when every binary of the component is already in the cache."""
    folder = install_dir(component, go)
    return all((folder / name).is_file() for name in component.binaries)


def ensure_built(
    components: Iterable[Component] = ALL_COMPONENTS, progress: ProgressFn | None = None
) -> dict[str, Path]:
    """Builds whatever is missing and returns a map of binary name to its cached path."""
    say = progress or _print_progress
    go = go_version()
    paths: dict[str, Path] = {}
    for component in components:
        folder = install_dir(component, go)
        if not is_built(component, go):
            _build(component, folder, go, say)
        for name in component.binaries:
            paths[name] = folder / name
    return paths


def _build(component: Component, target: Path, go: str, say: ProgressFn) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    label = f"{component.name} {component.version}"
    say(f"building {label} with {go} (binaries: {', '.join(component.binaries)})")
    started = time.monotonic()
    env = _go_env(component.env)
    try:
        _run_with_progress(["go", "mod", "download"], component, env, say, f"{label}: downloading")
        _run_with_progress(
            _build_command(component, staging), component, env, say, f"{label}: compiling"
        )
        for package, name in zip(component.packages, component.binaries, strict=True):
            built = staging / _default_exec_name(package)
            if built != staging / name:
                built.rename(staging / name)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"built {label} in {time.monotonic() - started:.0f}s -> {target}")


def _build_command(component: Component, out_dir: Path) -> list[str]:
    ldflags = " ".join(("-s", "-w", *component.ldflags))
    command = ["go", "build", "-v", "-trimpath", "-buildvcs=false", "-ldflags", ldflags]
    if component.tags:
        command += ["-tags", ",".join(component.tags)]
    return [*command, "-o", f"{out_dir}{os.sep}", *component.packages]


def _default_exec_name(package: str) -> str:
    """The file name ``go build -o dir/`` gives a main package (drops a ``/vN`` suffix)."""
    parts = package.split("/")
    last = parts[-1]
    if len(parts) > 1 and last.startswith("v") and last[1:].isdigit():
        return parts[-2]
    return last


def _go_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOWORK": "off", "GOFLAGS": "-mod=readonly"})
    env.update(extra)
    return env


def _run_with_progress(
    command: list[str], component: Component, env: dict[str, str], say: ProgressFn, what: str
) -> None:
    """Runs a Go command, reporting elapsed time and compiled-package count while it works."""
    started = time.monotonic()
    lines: list[str] = []
    process = subprocess.Popen(
        command,
        cwd=component.module_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    done = threading.Event()

    def report() -> None:
        while not done.wait(_PROGRESS_INTERVAL_S):
            elapsed = time.monotonic() - started
            say(f"{what}... {elapsed:.0f}s elapsed, {len(lines)} packages so far")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    assert process.stdout is not None
    _collect(process.stdout, lines)
    code = process.wait()
    done.set()
    reporter.join()
    if code != 0:
        tail = "\n".join(lines[-40:])
        raise BuildError(
            f"{' '.join(command[:2])} failed for {component.name} (exit {code}):\n{tail}"
        )


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def _print_progress(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


def link_binaries(paths: dict[str, Path]) -> Path:
    """Points ``<cache>/bin/<name>`` at each built binary, so one PATH entry finds them all."""
    link_dir = cache_root() / "bin"
    link_dir.mkdir(parents=True, exist_ok=True)
    for name, target in paths.items():
        link = link_dir / name
        temporary = link_dir / f".{name}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target)
        temporary.replace(link)
    return link_dir
