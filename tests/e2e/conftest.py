"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from helpers import rollout_env
from nodeos.sandbox import cluster


@pytest.fixture
def env_factory(
    sandbox: cluster.Sandbox, kube: client.ApiClient, crds_installed: None, tmp_path: Path
) -> Iterator[Any]:
    """Starts a simulated fleet and an operator replica: ``env_factory(*simulator_args)``."""
    yield from rollout_env.env_factory(sandbox, kube, tmp_path)
