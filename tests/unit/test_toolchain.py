from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nodeos.sandbox import components, toolchain


@pytest.mark.parametrize(
    ("package", "name"),
    [
        ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
        ("go.etcd.io/etcd/server/v3", "server"),
        ("helm.sh/helm/v3/cmd/helm", "helm"),
        ("example.com/v2", "example.com"),
    ],
)
def test_default_exec_name_drops_a_major_version_suffix(package: str, name: str) -> None:
    assert toolchain._default_exec_name(package) == name


def test_cache_root_honours_the_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NODEOS_CACHE_DIR", str(tmp_path / "c"))
    assert toolchain.cache_root() == tmp_path / "c"
    monkeypatch.delenv("NODEOS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert toolchain.cache_root() == tmp_path / "xdg" / "nodeos"


def test_build_key_changes_with_the_go_version_and_the_build_flags() -> None:
    base = toolchain.build_key(components.ETCD, "go1.26.8")
    assert base == toolchain.build_key(components.ETCD, "go1.26.8")
    assert base != toolchain.build_key(components.ETCD, "go1.27.3")
    stamped = dataclasses.replace(components.ETCD, ldflags=("-X main.version=other",))
    assert base != toolchain.build_key(stamped, "go1.26.8")


def test_install_dir_is_keyed_by_component_and_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NODEOS_CACHE_DIR", str(tmp_path))
    folder = toolchain.install_dir(components.KUBERNETES, "go1.26.8")
    assert folder.parent == tmp_path
    assert folder.name.startswith(f"kubernetes-{components.KUBERNETES_VERSION}-")
    assert not toolchain.is_built(components.KUBERNETES, "go1.26.8")
    folder.mkdir()
    for name in components.KUBERNETES.binaries:
        (folder / name).write_text("")
    assert toolchain.is_built(components.KUBERNETES, "go1.26.8")


def test_link_binaries_points_one_folder_at_every_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NODEOS_CACHE_DIR", str(tmp_path))
    target = tmp_path / "helm-x" / "helm"
    target.parent.mkdir()
    target.write_text("#!/bin/sh\n")
    link_dir = toolchain.link_binaries({"helm": target})
    assert (link_dir / "helm").resolve() == target
    link_dir = toolchain.link_binaries({"helm": target})
    assert (link_dir / "helm").resolve() == target
