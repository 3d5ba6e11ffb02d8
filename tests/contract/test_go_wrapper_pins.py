"""The committed Go wrapper modules pin exactly the versions the launcher says it runs."""

from __future__ import annotations

import re

import pytest

from nodeos.sandbox import components


def requirements(component: components.Component) -> dict[str, str]:
    text = (component.module_dir / "go.mod").read_text()
    return dict(re.findall(r"^\s*(\S+) (v\S+)(?: // indirect)?$", text, flags=re.M))


def replacements(component: components.Component) -> dict[str, str]:
    text = (component.module_dir / "go.mod").read_text()
    return dict(re.findall(r"^replace (\S+) => \S+ (v\S+)$", text, flags=re.M))


@pytest.mark.parametrize(
    ("component", "module"),
    [
        (components.KUBERNETES, "k8s.io/kubernetes"),
        (components.ETCD, "go.etcd.io/etcd/server/v3"),
        (components.KWOK, "sigs.k8s.io/kwok"),
        (components.HELM, "helm.sh/helm/v3"),
        (components.PROMETHEUS, "github.com/prometheus/prometheus"),
        (components.TALOS_INTEROP, "github.com/siderolabs/talos/pkg/machinery"),
        (components.TALOS_INTEROP_LEGACY, "github.com/siderolabs/talos/pkg/machinery"),
    ],
)
def test_wrapper_requires_the_pinned_version(component: components.Component, module: str) -> None:
    assert requirements(component)[module] == component.version
    assert (component.module_dir / "go.sum").read_text().strip()


def test_every_kubernetes_staging_module_is_replaced_by_the_matching_release() -> None:
    staging = "v0." + components.KUBERNETES_VERSION.removeprefix("v1.")
    pinned = replacements(components.KUBERNETES)
    assert len(pinned) >= 28
    assert set(pinned.values()) == {staging}
    for module in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/kubectl"):
        assert module in pinned
