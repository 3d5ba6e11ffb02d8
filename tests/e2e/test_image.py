"""The operator image built from the repository's Dockerfile: what it holds and how it starts.

The rollout with the operator inside the image is in test_chart.py.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers.image import REPO, image_config, run_in_image, working_container
from nodeos import __version__
from nodeos.sandbox.image import build_on_stand_ins

pytestmark = pytest.mark.sandbox


def test_the_image_runs_nodeos_as_non_root_with_labels(operator_image: str) -> None:
    config = image_config(operator_image)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["python3", "-m", "nodeos"]
    assert config["Cmd"] == ["run"]
    labels = config["Labels"]
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"label {key} missing: {labels}"
    assert labels["org.opencontainers.image.version"] == __version__
    started = run_in_image(operator_image, *config["Entrypoint"], "--version")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"nodeos {__version__}"
    whoami = run_in_image(operator_image, "python3", "-c", "import os; print(os.getuid())")
    assert whoami.stdout.strip() == "65532"


def test_the_image_holds_the_operator_only(operator_image: str) -> None:
    pip = run_in_image(operator_image, "python3", "-m", "pip", "--version")
    assert pip.returncode != 0, f"pip is in the image: {pip.stdout}"
    listing = run_in_image(
        operator_image,
        "python3",
        "-c",
        "import nodeos, os; print(' '.join(sorted(os.listdir(nodeos.__path__[0]))))",
    )
    held = set(listing.stdout.split())
    assert {"operator.py", "engine", "adapters", "osapi"} <= held, held
    assert not {"sandbox", "simulator", "demo.py", "codegen.py"} & held, held
    # every module the operator imports is there, byte-compiled ahead (read-only root filesystem)
    imported = run_in_image(
        operator_image,
        "python3",
        "-c",
        "import nodeos.operator, zoneinfo; zoneinfo.ZoneInfo('US/Central'); print('ok')",
    )
    assert imported.stdout.strip() == "ok", imported.stderr
    # a developer command says what is missing instead of a traceback
    demo = run_in_image(operator_image, "python3", "-m", "nodeos", "demo")
    assert demo.returncode == 2
    assert "developer tools" in demo.stderr and "Traceback" not in demo.stderr, demo.stderr


def test_an_arm64_image_builds_here_without_emulation(figures: list[str]) -> None:
    """The build stage runs on this CPU and fetches arm64 wheels; the runtime stage only copies."""
    started = time.monotonic()
    tag = "localhost/nodeos:test-arm64"
    build_on_stand_ins(REPO, tag, ["linux/arm64"])
    figures.append(f"arm64 operator image built in {time.monotonic() - started:.1f}s")
    with working_container(tag) as container:
        root = Path(
            subprocess.run(
                ["buildah", "mount", container], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        machines = Counter(
            _elf_machine(path)
            for path in [*(root / "opt/nodeos/lib").rglob("*.so*"), root / "usr/bin/python3.11"]
            if _elf_machine(path) is not None
        )
    assert image_config(tag).get("Entrypoint") == ["python3", "-m", "nodeos"]
    # grpc, cryptography, pydantic-core, yaml, cel ... and the interpreter: all aarch64
    assert machines.get(AARCH64, 0) >= 10 and set(machines) == {AARCH64}, machines


AARCH64 = 183  # ELF e_machine


def _elf_machine(path: Path) -> int | None:
    head = path.read_bytes()[:20]
    return int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else None
