"""``KubeClient``: the ``KubeApi`` port over the API server.

The calls a rollout makes per node (Node reads and patches, pod lists, evictions, Events, the
plan's status) go through ``_json``: plain JSON on the event loop (``adapters.http``, with the
ApiClient's host, TLS and credentials), without the generated client's threads, argument
validation and model classes, which cost more CPU than the requests themselves. The rare
calls (reading the plan and Secrets, creating and deleting objects) use the official
synchronous client, each in one of this client's own worker threads (``CONCURRENCY`` of them,
with as many pooled connections), so the event loop never blocks.
Guarded writes send ``metadata.resourceVersion`` with a merge patch, which the API server
turns into a precondition (409 Conflict when the object moved on).

Every failure leaves as one of the port's errors: 404 ``NotFoundError``, 409
``ConflictError``, any other status ``KubeApiError`` with it, and no answer at all
(connection refused or reset, timeout) ``KubeApiError`` with status 0, so the engine can tell
transient from permanent and apply its deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime
import functools
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter
from urllib3.exceptions import HTTPError

from nodeos.adapters.http import JsonSession
from nodeos.core.nodes import CORDONED_BY_ANNOTATION
from nodeos.ports.fence import FENCE
from nodeos.ports.kube import (
    ConflictError,
    Cordon,
    Eviction,
    EvictionOutcome,
    KubeApiError,
    NodeHealth,
    NotFoundError,
    PodListing,
    PodView,
)

GROUP, VERSION, PLURAL = "nodeos.dev", "v1alpha1", "upgradeplans"
REQUESTS = Counter("nodeos_kube_requests_total", "Kubernetes API requests made by the engine")
EVENT_NAMESPACE = "default"
_SERIES_S = 600.0  # a repeated Event within this long counts on the first one
_SERIES_KEPT = 4096  # Events remembered for that
CONCURRENCY = 32  # requests in flight at once (threads and pooled connections)
# A list of objects' metadata only: at 5,000 Nodes, a fraction of the full objects' bytes
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_MERGE_PATCH = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_ANNOTATIONS = "/metadata/annotations/"
_PLANS = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
_EVENTS = f"/api/v1/namespaces/{EVENT_NAMESPACE}/events"


class KubeClient:
    """Talks to the API server with one ApiClient (thread-safe for concurrent requests)."""

    def __init__(self, api: client.ApiClient, component: str = "nodeos") -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.component = component
        self._threads = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="kube")
        self._http = JsonSession(api.configuration, CONCURRENCY)
        if api.configuration.connection_pool_maxsize < CONCURRENCY:
            api.configuration.connection_pool_maxsize = CONCURRENCY
            api.rest_client = rest.RESTClientObject(api.configuration)
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}
        # The Events posted lately: (name, count, first posted) by what they said
        self._series: collections.OrderedDict[
            tuple[str, str, str, str, str, bool], tuple[str, int, float]
        ] = collections.OrderedDict()

    async def _run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        FENCE.check()
        REQUESTS.inc()
        try:
            call = functools.partial(func, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except ApiException as error:
            raise _port_error(int(error.status or 0), _message(error)) from None
        except (HTTPError, OSError) as error:
            raise KubeApiError(0, f"no answer from the API server: {error}") from None

    async def get_plan(self, name: str) -> dict[str, Any]:
        """The UpgradePlan object."""
        try:
            plan: dict[str, Any] = await self._run(
                self.custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name
            )
        except NotFoundError:
            raise NotFoundError(name) from None
        return plan

    async def patch_plan_status(
        self, name: str, status: dict[str, Any], resource_version: str
    ) -> str:
        """Writes the status, guarded by ``resource_version``."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            result = await self._patch(f"{_PLANS}/{name}/status", body)
        except ConflictError:
            raise ConflictError(name) from None
        return str(result["metadata"]["resourceVersion"])

    async def remove_plan_annotation(self, name: str, key: str) -> None:
        """Drops an annotation from the plan."""
        body = {"metadata": {"annotations": {key: None}}}
        await self._run(self.custom.patch_cluster_custom_object, GROUP, VERSION, PLURAL, name, body)

    async def cordon(
        self,
        node: str,
        owner: str,
        annotations: Mapping[str, str] | None = None,
        seen_version: str | None = None,
    ) -> Cordon:
        """Cordons with our mark (and ``annotations``) unless someone else cordoned the node.

        The write is guarded by a resourceVersion, so of two plans cordoning at once one wins
        and the other finds the winner's mark. ``seen_version`` is one at which the caller saw
        the node free to cordon (its watch): then no read is needed unless the node changed
        since, when a fresh read decides as without it.
        """
        if seen_version:
            try:
                await self._patch(
                    f"/api/v1/nodes/{node}", _cordoned(owner, annotations, seen_version)
                )
                return Cordon(ours=True)
            except ConflictError:
                pass
        while True:
            current = await self._read_node(node)
            mark = (current["metadata"].get("annotations") or {}).get(CORDONED_BY_ANNOTATION)
            if current.get("spec", {}).get("unschedulable") and mark != owner:
                return Cordon(ours=False, holder=mark)
            version = current["metadata"]["resourceVersion"]
            try:
                await self._patch(f"/api/v1/nodes/{node}", _cordoned(owner, annotations, version))
            except ConflictError:
                continue
            return Cordon(ours=True)

    async def uncordon(
        self, node: str, owner: str, annotations: Mapping[str, str] | None = None
    ) -> bool:
        """Uncordons and unmarks (and sets ``annotations``), only when the mark is ``owner``'s.

        One JSON patch whose first operation tests the mark, so the API server applies it only
        while the mark is ours. When it refuses (the mark is another's or gone, or someone
        uncordoned already), a read decides.
        """
        mark = _ANNOTATIONS + _pointer(CORDONED_BY_ANNOTATION)
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": mark, "value": owner},
            {"op": "remove", "path": mark},
            {"op": "remove", "path": "/spec/unschedulable"},
        ]
        operations += [
            {"op": "add", "path": _ANNOTATIONS + _pointer(key), "value": value}
            for key, value in (annotations or {}).items()
        ]
        try:
            await self._json(
                "PATCH",
                f"/api/v1/nodes/{node}",
                None,
                operations,
                "application/json",
                _JSON_PATCH,
            )
            return True
        except ConflictError:
            pass
        except KubeApiError as error:
            # 422 (a test failed), 400 (removing what is not there); 500 from old servers
            if error.status not in (400, 422, 500):
                raise
        while True:
            current = await self._read_node(node)
            annotated = current["metadata"].get("annotations") or {}
            if annotated.get(CORDONED_BY_ANNOTATION) != owner:
                return False
            body = {
                "metadata": {
                    "annotations": {CORDONED_BY_ANNOTATION: None, **(annotations or {})},
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
                "spec": {"unschedulable": None},
            }
            try:
                await self._patch(f"/api/v1/nodes/{node}", body)
            except ConflictError:
                continue
            return True

    async def cordoned_nodes(self, owner: str) -> list[str]:
        """Lists every Node and keeps those marked as cordoned by ``owner``."""
        nodes = await self._run(self.core.list_node)
        return [
            n.metadata.name
            for n in nodes.items
            if (n.metadata.annotations or {}).get(CORDONED_BY_ANNOTATION) == owner
        ]

    async def node_health(self, node: str) -> NodeHealth:
        """The Ready condition and the kubelet's boot ID, fresh from the API."""
        status = (await self._read_node(node)).get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        boot_id = str((status.get("nodeInfo") or {}).get("bootID") or "")
        return NodeHealth(ready=ready, boot_id=boot_id)

    async def pods_on(self, node: str) -> PodListing:
        """Every pod bound to ``node`` (a consistent read), with the list's resourceVersion."""
        pods = await self._json("GET", "/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"})
        return PodListing(
            [_pod_view(pod) for pod in pods.get("items") or []],
            str((pods.get("metadata") or {}).get("resourceVersion") or ""),
        )

    async def binds_pending(self, version: str) -> bool:
        """Lists at most one pending pod without a node, exactly as of ``version``.

        A version the API server no longer serves (410, compacted) answers True: the drain
        then looks again after the settle time, as for a pod waiting to be bound.
        """
        query = {"fieldSelector": "spec.nodeName=,status.phase=Pending", "limit": "1"}
        if version:
            query |= {"resourceVersion": version, "resourceVersionMatch": "Exact"}
        try:
            pods = await self._json("GET", "/api/v1/pods", query)
        except KubeApiError as error:
            if error.status == 410:
                return True
            raise
        return bool(pods.get("items"))

    async def evict(self, pod: PodView, grace_seconds: int | None) -> EvictionOutcome:
        """POSTs an Eviction."""
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        if grace_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_seconds}
        try:
            path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction"
            await self._json("POST", path, None, body)
        except NotFoundError:
            return EvictionOutcome(Eviction.GONE)
        except KubeApiError as error:
            if error.status == 429:
                return EvictionOutcome(Eviction.BLOCKED, error.detail)
            raise
        return EvictionOutcome(Eviction.EVICTED)

    async def delete_pod(self, pod: PodView, grace_seconds: int | None) -> None:
        """Deletes a pod without asking its PDB."""
        with contextlib.suppress(NotFoundError):
            await self._run(
                self.core.delete_namespaced_pod,
                pod.name,
                pod.namespace,
                grace_period_seconds=grace_seconds if grace_seconds is not None else 0,
            )

    async def event(
        self,
        kind: str,
        name: str,
        uid: str,
        api_version: str,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Creates a core/v1 Event (in ``default``, as for other cluster-scoped objects).

        The same Event again (object, reason, message, type) within ``_SERIES_S`` raises the
        first one's ``count`` and ``lastTimestamp`` instead, as kubectl describe shows it.
        """
        now = datetime.datetime.now(datetime.UTC)
        key = (kind, name, uid, reason, message[:1024], warning)
        seen = self._series.get(key)
        if seen is not None and time.monotonic() - seen[2] < _SERIES_S:
            event_name, count, first = seen
            patch = {"count": count + 1, "lastTimestamp": now}
            with contextlib.suppress(KubeApiError, ConflictError):  # best effort
                try:
                    await self._patch(f"{_EVENTS}/{event_name}", patch)
                    self._series[key] = (event_name, count + 1, first)
                    self._series.move_to_end(key)
                    return
                except NotFoundError:
                    pass  # expired or deleted: post a new one
        body = {
            "metadata": {"generateName": f"{name}.", "namespace": EVENT_NAMESPACE},
            "involvedObject": {"kind": kind, "name": name, "uid": uid, "apiVersion": api_version},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(KubeApiError, ConflictError, NotFoundError):  # best effort
            created = await self._json("POST", _EVENTS, None, body)
            self._series[key] = (str(created["metadata"]["name"]), 1, time.monotonic())
            while len(self._series) > _SERIES_KEPT:
                self._series.popitem(last=False)

    async def label_node(
        self,
        node: str,
        labels: dict[str, str | None],
        annotations: dict[str, str | None] | None = None,
    ) -> None:
        """Sets or removes labels (and annotations)."""
        metadata: dict[str, Any] = {"labels": labels}
        if annotations:
            metadata["annotations"] = annotations
        await self._patch(f"/api/v1/nodes/{node}", {"metadata": metadata})

    async def annotate_node(self, node: str, key: str, value: str | None) -> None:
        """Merge-patches one annotation (the Lease fences this writer; no other writes the key)."""
        await self._patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": {key: value}}})

    async def nodes_annotated(self, key: str) -> dict[str, str]:
        """Lists the Nodes' metadata only (no status) and keeps those carrying ``key``."""
        listed = await self._json("GET", "/api/v1/nodes", None, None, _METADATA_ONLY)
        found = {}
        for item in listed.get("items") or []:
            value = (item["metadata"].get("annotations") or {}).get(key)
            if value is not None:
                found[str(item["metadata"]["name"])] = str(value)
        return found

    async def read_secret_key(self, namespace: str, name: str, key: str) -> tuple[str, bytes]:
        """A Secret's resourceVersion and the decoded value of ``key``."""
        secret = await self._run(self.core.read_namespaced_secret, name, namespace)
        data = secret.data or {}
        if key not in data:
            raise KeyError(f"secret {namespace}/{name} has no key {key!r}")
        return str(secret.metadata.resource_version), base64.b64decode(data[key])

    async def apply_plan(self, body: dict[str, Any]) -> None:
        """Creates the plan, or replaces spec, labels and owners of the existing one."""
        name = body["metadata"]["name"]
        try:
            await self._run(self.custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, body)
        except ConflictError:
            current = await self.get_plan(name)
            if current.get("spec") == body["spec"]:
                return
            patch = {
                "metadata": {"ownerReferences": body["metadata"].get("ownerReferences")},
                "spec": body["spec"],
            }
            await self._run(
                self.custom.patch_cluster_custom_object, GROUP, VERSION, PLURAL, name, patch
            )

    async def delete_plan(self, name: str) -> None:
        """Deletes the plan if it exists."""
        with contextlib.suppress(NotFoundError):
            await self._run(self.custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, name)

    async def patch_config_status(self, name: str, status: dict[str, Any]) -> None:
        """Merges ``status`` into the NodeOSConfig's status."""
        await self._run(
            self.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            "nodeosconfigs",
            name,
            {"status": status},
        )

    async def read_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str | None,
        label_selector: str | None,
    ) -> list[dict[str, Any]]:
        """The objects a health check names: one by name (none if absent) or all matching."""
        plural, namespaced = await self._resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespaced and namespace:
            base += f"/namespaces/{namespace}"
        elif namespaced and name:
            raise KubeApiError(400, f"{kind} is namespaced: the check must name its namespace")
        if name:
            try:
                return [await self._json("GET", f"{base}/{plural}/{name}")]
            except NotFoundError:
                return []
        query = {"labelSelector": label_selector} if label_selector else None
        listed = await self._json("GET", f"{base}/{plural}", query)
        return [{"apiVersion": api_version, "kind": kind, **item} for item in listed["items"]]

    async def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """The plural and scope of ``kind`` in ``api_version`` (discovery, cached)."""
        cached = self._resources.get((api_version, kind))
        if cached is not None:
            return cached
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = await self._json("GET", path)
        except NotFoundError:
            raise KubeApiError(404, f"the API server serves no {api_version}") from None
        for resource in listing.get("resources", []):
            if resource.get("kind") == kind and "/" not in resource.get("name", ""):
                found = (str(resource["name"]), bool(resource.get("namespaced")))
                self._resources[(api_version, kind)] = found
                return found
        raise KubeApiError(404, f"the API server serves no kind {kind} in {api_version}")

    async def _read_node(self, node: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._json("GET", f"/api/v1/nodes/{node}")
        return found

    async def _patch(self, path: str, body: dict[str, Any]) -> Any:
        """A JSON merge patch (null removes a key)."""
        return await self._json("PATCH", path, None, body, "application/json", _MERGE_PATCH)

    async def _json(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> Any:
        """One request with a JSON body and answer, on the event loop (see the module)."""
        FENCE.check()
        REQUESTS.inc()
        # identity: the API server gzips any answer to a client that accepts it, which at
        # 1,000 nodes cost it 12 s of CPU more (and the rollout 7 s) for answers of a few KB
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body, default=_encodable).encode()
        try:
            status, reason, payload = await self._http.request(method, path, query, data, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise KubeApiError(0, f"no answer from the API server: {error!r}") from None
        if not 200 <= status <= 299:
            raise _port_error(status, _message_of(payload, reason))
        return json.loads(payload or b"null")

    async def close(self) -> None:
        """Closes the connections of the JSON requests (the ApiClient is its owner's)."""
        await self._http.close()


def _cordoned(owner: str, annotations: Mapping[str, str] | None, version: str) -> dict[str, Any]:
    """The merge patch that cordons, marks and annotates, guarded by ``version``."""
    return {
        "metadata": {
            "annotations": {CORDONED_BY_ANNOTATION: owner, **(annotations or {})},
            "resourceVersion": version,
        },
        "spec": {"unschedulable": True},
    }


def _pointer(key: str) -> str:
    """An annotation key as a JSON pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")


def _pod_view(pod: dict[str, Any]) -> PodView:
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    owners = metadata.get("ownerReferences") or []
    annotations = metadata.get("annotations") or {}
    return PodView(
        namespace=metadata["namespace"],
        name=metadata["name"],
        daemon_set=any(owner.get("kind") == "DaemonSet" for owner in owners),
        mirror="kubernetes.io/config.mirror" in annotations,
        terminating=metadata.get("deletionTimestamp") is not None,
        finished=(pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
        labels=dict(metadata.get("labels") or {}),
        empty_dir=any("emptyDir" in volume for volume in spec.get("volumes") or []),
    )


def _port_error(status: int, message: str) -> Exception:
    """The port's error for an answer with this HTTP status."""
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    return KubeApiError(status, message)


def _encodable(value: object) -> str:
    """What JSON cannot carry as it is: times, as RFC 3339 (the API's form)."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _message(error: ApiException) -> str:
    return _message_of(error.body, error.reason)


def _message_of(body: str | bytes | None, reason: object) -> str:
    """The Status message of an error answer, else its HTTP reason."""
    try:
        return str(json.loads(body or "{}").get("message", reason))
    except (TypeError, ValueError, AttributeError):
        return str(reason)
