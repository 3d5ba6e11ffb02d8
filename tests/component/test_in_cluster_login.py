"""The in-cluster login dials the address the kubelet puts in the environment."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from nodeos.handlers import lifecycle


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "token").write_text("abc\n")
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("nodeos-system")
    monkeypatch.setattr(lifecycle, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    return tmp_path


def test_the_service_host_and_port_from_the_environment(
    account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = lifecycle.in_cluster_login(kopf.OperatorSettings())
    assert info is not None
    assert info.server == "https://10.96.0.1:6443"
    assert info.token == "abc"
    assert info.ca_path == str(account / "ca.crt")
    assert info.default_namespace == "nodeos-system"


def test_an_ipv6_service_address_is_bracketed(
    account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info = lifecycle.in_cluster_login(kopf.OperatorSettings())
    assert info is not None and info.server == "https://[fd00::1]:443"


def test_without_the_environment_kopfs_own_login_is_used(
    account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = lifecycle.in_cluster_login(kopf.OperatorSettings())
    # kopf looks only at the real service-account path, which this machine does not have
    assert info is None or info.server == "https://kubernetes.default.svc"
