"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import gc
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from helpers import image, rollout_env
from nodeos.sandbox import cluster

# Allocations in this process (not in the sandbox, simulator or operator processes it starts)
# are traced, so an object left unclosed can be reported with where it was made
tracemalloc.start(16)


@pytest.fixture(autouse=True)
def collected_after_each_test() -> Iterator[None]:
    """Collects the garbage when each test ends, and fails on anything left unclosed.

    A client socket left open is then reported at the teardown of the test that dropped it,
    not in whichever test the collector ran later, with the stack that created it.
    """
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    if leaks:
        pytest.fail("\n".join(_where_made(w) for w in leaks), pytrace=False)


def _where_made(warning: warnings.WarningMessage) -> str:
    made = tracemalloc.get_object_traceback(warning.source) if warning.source else None
    stack = "\n".join(made.format()) if made is not None else "  (not traced)"
    return f"{warning.message}, made at:\n{stack}"


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
