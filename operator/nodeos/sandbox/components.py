"""The pinned Go-built components of the sandbox: what to build, from which wrapper module, how.

Each component is built from a small wrapper Go module committed under ``gomod/<name>/`` whose
``go.mod``/``go.sum`` pin the upstream version. This module is plain data; ``toolchain`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GOMOD_ROOT = Path(__file__).parent / "gomod"

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
HELM_VERSION = "v3.19.5"
PROMETHEUS_VERSION = "v0.316.0"  # the Go module's version of Prometheus 3.16.0
TALOS_MACHINERY_VERSION = "v1.13.0"
TALOS_MACHINERY_LEGACY_VERSION = "v1.12.0"  # before ImageService and LifecycleService

_K8S_MINOR = KUBERNETES_VERSION.split(".")[1]
_K8S_VERSION_PKG = "k8s.io/component-base/version"


@dataclass(frozen=True)
class Component:
    """A set of binaries built together by one ``go build`` from one wrapper module.

    Attributes:
        name: short name; also the wrapper module's folder under ``gomod/``.
        version: the upstream version the wrapper pins (part of the cache key).
        packages: Go main packages to build.
        binaries: output file name for each package, in the same order.
        ldflags: extra ``-ldflags`` (version stamping), joined with spaces.
        tags: Go build tags.
    """

    name: str
    version: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def module_dir(self) -> Path:
        """The committed wrapper module this component is built from."""
        return GOMOD_ROOT / self.name


KUBERNETES = Component(
    name="kubernetes",
    version=KUBERNETES_VERSION,
    packages=tuple(
        f"k8s.io/kubernetes/cmd/{cmd}"
        for cmd in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    ),
    binaries=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ldflags=(
        f"-X {_K8S_VERSION_PKG}.gitVersion={KUBERNETES_VERSION}",
        f"-X {_K8S_VERSION_PKG}.gitMajor=1",
        f"-X {_K8S_VERSION_PKG}.gitMinor={_K8S_MINOR}",
        f"-X {_K8S_VERSION_PKG}.gitTreeState=clean",
        f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}",
        "-X k8s.io/client-go/pkg/version.gitMajor=1",
        f"-X k8s.io/client-go/pkg/version.gitMinor={_K8S_MINOR}",
    ),
    tags=("selinux", "notest"),
)

ETCD = Component(
    name="etcd",
    version=ETCD_VERSION,
    packages=("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3"),
    binaries=("etcd", "etcdctl"),
)

KWOK = Component(
    name="kwok",
    version=KWOK_VERSION,
    packages=("sigs.k8s.io/kwok/cmd/kwok",),
    binaries=("kwok",),
    ldflags=(
        f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}",
        f"-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={KUBERNETES_VERSION.lstrip('v')}",
    ),
)

HELM = Component(
    name="helm",
    version=HELM_VERSION,
    packages=("helm.sh/helm/v3/cmd/helm",),
    binaries=("helm",),
    ldflags=(
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={_K8S_MINOR}",
    ),
)

PROMETHEUS = Component(
    name="prometheus",
    version=PROMETHEUS_VERSION,
    packages=(
        "github.com/prometheus/prometheus/cmd/prometheus",
        "github.com/prometheus/prometheus/cmd/promtool",
    ),
    binaries=("prometheus", "promtool"),
    ldflags=("-X github.com/prometheus/common/version.Version=3.16.0",),
    # No service discovery plugins (cloud SDKs): the sandbox uses static targets only.
    tags=("remove_all_sd",),
)

# Our interop checker (gomod/talos-interop/*.go) against the official Talos client library,
# built once per machinery version; the v1.12 module links the same sources (tag talos112).
TALOS_INTEROP = Component(
    name="talos-interop",
    version=TALOS_MACHINERY_VERSION,
    packages=("nodeos.dev/sandbox/talosinterop",),
    binaries=("talos-interop",),
)
TALOS_INTEROP_LEGACY = Component(
    name="talos-interop-1.12",
    version=TALOS_MACHINERY_LEGACY_VERSION,
    packages=("nodeos.dev/sandbox/talosinterop112",),
    binaries=("talos-interop-1.12",),
    tags=("talos112",),
)

ALL_COMPONENTS: tuple[Component, ...] = (
    ETCD,
    KUBERNETES,
    KWOK,
    HELM,
    PROMETHEUS,
    TALOS_INTEROP,
    TALOS_INTEROP_LEGACY,
)
