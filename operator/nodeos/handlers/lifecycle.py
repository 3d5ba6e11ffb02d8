"""Operator start-up and shutdown: kopf settings, login, and the shared engine dependencies."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from kubernetes import client, config

from nodeos.adapters.kube import KubeClient
from nodeos.adapters.osapi.client import TalosClient
from nodeos.adapters.osapi.talosconfig import FileSource, SecretSource, TalosConfigError
from nodeos.adapters.prometheus import PrometheusClient
from nodeos.config import OperatorConfig
from nodeos.engine import metrics
from nodeos.engine.rollout import EngineDeps
from nodeos.engine.routing import Routing
from nodeos.models.common import parse_duration
from nodeos.models.nodeapi import OsApiAccess
from nodeos.ports.kube import KubeApiError, NotFoundError
from nodeos.ports.osapi import ErrorKind


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Uses the kubeconfig when one is given, else the pod's service account."""
    cfg: OperatorConfig = kwargs["memo"].config
    if cfg.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(cfg.kubeconfig)  # kopf reads the path from here
        return kopf.login_with_kubeconfig(**kwargs)
    return in_cluster_login(kwargs["settings"])


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster_login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """The pod's service account, at the address the kubelet gives in the environment.

    kopf's own service-account login always dials ``kubernetes.default.svc:443``, which a pod
    on the host network, or without cluster DNS, cannot resolve; the kubernetes client (the
    Lease, the engine) and client-go read ``KUBERNETES_SERVICE_HOST``/``_PORT``, and so do we.
    """
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    token_path = f"{SERVICE_ACCOUNT_DIR}/token"
    if not host or not os.path.exists(token_path):
        return kopf.login_with_service_account(settings=settings)
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    with open(token_path, encoding="utf-8") as token_file:
        token = token_file.read().strip()
    namespace = None
    if os.path.exists(f"{SERVICE_ACCOUNT_DIR}/namespace"):
        with open(f"{SERVICE_ACCOUNT_DIR}/namespace", encoding="utf-8") as namespace_file:
            namespace = namespace_file.read().strip() or None
    ca_path = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    return kopf.ConnectionInfo(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_path=ca_path if os.path.exists(ca_path) else None,
        token=token or None,
        default_namespace=namespace,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keeps kopf's own bookkeeping in annotations and builds the engine's ports."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="nodeos.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="nodeos.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Daemons exit by themselves when asked (their loops wake on kopf's stop flag): wait for
    # that rather than for the cancellation backoff, so deleting a plan or stopping is quick.
    settings.background.instant_exit_timeout = 5.0
    cfg: OperatorConfig = memo.config
    api = api_client(cfg)
    source = FileSource(cfg.talosconfig)
    credentials = await source.load()
    osapi = TalosClient(
        source,
        timeout_s=cfg.os_api_timeout_s,
        observer=_observe,
        containerd=cfg.os_api_containerd,
    )
    memo.api_client = api
    memo.osapi = osapi
    memo.rollouts = {}
    kube = KubeClient(api)
    memo.kube = kube

    async def osapi_for(access: OsApiAccess) -> tuple[TalosClient, Routing]:
        secret = access.talosconfig_secret

        async def fetch() -> tuple[str, bytes]:
            where = f"secret {secret.namespace}/{secret.name}"
            allowed = cfg.readable_secret_namespaces
            if secret.namespace not in allowed:
                raise TalosConfigError(
                    f"{where} is outside the namespaces whose Secrets nodeos may read "
                    f"({', '.join(allowed)}); move it there, or allow its namespace "
                    "(chart value osApi.secretNamespaces, setting --secret-namespaces)"
                )
            try:
                return await kube.read_secret_key(secret.namespace, secret.name, secret.key)
            except NotFoundError:
                raise TalosConfigError(
                    f"{where} does not exist; create it with the talosconfig under key "
                    f"{secret.key!r} (see docs/operating.md)"
                ) from None
            except KubeApiError as error:
                if error.transient:
                    raise
                raise TalosConfigError(f"{where} cannot be read: {error}") from None
            except KeyError as error:
                raise TalosConfigError(str(error.args[0])) from None

        source = SecretSource(fetch, f"secret {secret.namespace}/{secret.name}", recheck_s=30)
        found = await source.load()
        client_ = TalosClient(
            source,
            timeout_s=parse_duration(access.timeout).total_seconds(),
            observer=_observe,
            containerd=cfg.os_api_containerd,
        )
        return client_, Routing(access.endpoints, found.endpoints, access.port, source.endpoints)

    memo.deps = EngineDeps(
        osapi_for=osapi_for,
        kube=kube,
        osapi=osapi,
        routing=Routing(
            cfg.os_api_endpoints, credentials.endpoints, cfg.os_api_port, source.endpoints
        ),
        operator_node=cfg.node_name,
        own_pod=cfg.own_pod,
        poll_s=cfg.poll_s,
        prometheus=PrometheusClient(),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Closes the OS API and API server connections, and sets the operator's stop flag.

    kopf replaces our SIGTERM handler with its own, which does not set the stop flag; kopf
    would then wait 5 s for the task that waits on the flag before it exits.
    """
    stop = getattr(memo, "stop", None)
    if stop is not None:
        stop.set()
    osapi = getattr(memo, "osapi", None)
    if osapi is not None:
        await osapi.close()
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()


def api_client(cfg: OperatorConfig) -> client.ApiClient:
    """A kubernetes ApiClient for the configured cluster."""
    if cfg.kubeconfig is not None:
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(cfg.kubeconfig)
        )
        return api
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _observe(method: str, seconds: float, kind: ErrorKind | None) -> None:
    metrics.OSAPI_SECONDS.labels(method).observe(seconds)
    if kind is not None:
        metrics.OSAPI_ERRORS.labels(method, kind.value).inc()
