"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from helpers import image, rollout_env, sockets
from nodeos.sandbox import cluster


@pytest.fixture(autouse=True)
def collected_after_each_test() -> Iterator[None]:
    """Collects the garbage when each test ends.

    A client socket left open is then reported, with the stack that made it, at the teardown
    of the test that dropped it, not in whichever test the collector ran later.
    """
    yield
    sockets.collect_and_check()


@pytest.fixture
def env_factory(
    sandbox: cluster.Sandbox, kube: client.ApiClient, crds_installed: None, tmp_path: Path
) -> Iterator[Any]:
    """Starts a simulated fleet and an operator replica: ``env_factory(*simulator_args)``."""
    yield from rollout_env.env_factory(sandbox, kube, tmp_path)


@pytest.fixture(scope="session")
def operator_image(figures: list[str]) -> str:
    """The repository's Dockerfile built with buildah on Debian stand-in bases (cached layers)."""
    tag, seconds = image.build_operator_image()
    figures.append(f"operator image built in {seconds:.1f}s")
    return tag
