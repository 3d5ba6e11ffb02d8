"""Keeps each simulated node's Kubernetes Node in step with its simulated OS.

On start every node gets a Node (created as a kwok fake node when missing) whose
``status.nodeInfo.osImage`` reads ``Talos (<version>)``. When a node goes down the driver tells
kwok to leave its status alone and marks it NotReady; when it comes back it reports the new
osImage and boot ID and Ready, then hands the node back to kwok. A node that never returns stays
NotReady, as a real one would.

Pods still bound to a node that goes down stop being Ready (their containers die with the OS;
the node lifecycle controller does not mark them, since the node reports NotReady rather than
going silent), and are Ready again once it is back, as after a kubelet restart. So a pod that
was rebooted without being evicted shows in its PodDisruptionBudget, as it would for real.

And as a kubelet keeps posting, every ``resync_s`` the driver posts again what was written
over on a running node: its boot ID and OS image (kwok renders a Node's status from the object
as it last saw it, sometimes an older one), and Ready for its running pods left not Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import urllib.parse
from typing import Any

import aiohttp
from kubernetes import client

from nodeos.adapters.http import JsonSession
from nodeos.sandbox import kwok
from nodeos.simulator.fleet import Fleet
from nodeos.simulator.node import Power, SimulatedNode, Transition

_KWOK_SETTLE_S = 0.2
_POD_SETTLE_S = 10.0  # a pod not Ready for this long on a running node is made Ready again
_CONCURRENCY = 32  # requests in flight at once (pooled connections)
_STRATEGIC = "application/strategic-merge-patch+json"  # conditions merge by type, as kubelet's


class ApiError(Exception):
    """The API server answered with an error status (0: it did not answer)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}" if status else reason)
        self.status = status


class _Api:
    """The few requests the driver makes, as JSON on the event loop.

    On the simulator's own loop, beside its gRPC servers: the official client's worker
    threads took the interpreter from the gRPC loop, and at 5,000 nodes OS API calls waited
    seconds for it.
    """

    def __init__(self, configuration: client.Configuration) -> None:
        self._http = JsonSession(configuration, _CONCURRENCY)

    async def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        data = None
        if body is not None:
            headers["Content-Type"] = _STRATEGIC if method == "PATCH" else "application/json"
            data = json.dumps(body).encode()
        try:
            status, reason, payload = await self._http.request(method, path, query, data, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise ApiError(0, f"no answer from the API server: {error!r}") from None
        if not 200 <= status <= 299:
            raise ApiError(status, reason)
        return json.loads(payload or b"null")

    async def items(self, path: str, **query: str) -> list[dict[str, Any]]:
        listed = await self.call("GET", path, query=query or None)
        return list(listed.get("items") or [])

    async def close(self) -> None:
        await self._http.close()


def _node(name: str, subresource: str = "") -> str:
    return f"/api/v1/nodes/{urllib.parse.quote(name)}{subresource}"


def _pod_status(namespace: str, name: str) -> str:
    quote = urllib.parse.quote
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}/status"


def os_image(version: str) -> str:
    """The osImage a Talos node reports."""
    return f"Talos ({version})"


class NodeDriver:
    """Applies fleet transitions to Node objects, on the event loop.

    Each node's transitions are applied in order, as its kubelet would post them; different
    nodes' go in parallel, ``_CONCURRENCY`` requests at once, so a fleet of hundreds rebooting
    together is not queued behind one another's requests.
    """

    def __init__(
        self, configuration: client.Configuration, fleet: Fleet, *, resync_s: float = 20.0
    ) -> None:
        self._api = _Api(configuration)
        self.fleet = fleet
        self._queues: dict[str, asyncio.Queue[Transition]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._resyncing: asyncio.Task[None] | None = None
        self._busy: set[str] = set()  # nodes whose transition is being applied
        self._resync_s = resync_s
        self._following = False

    async def start(self) -> None:
        """Registers or updates every Node (many at once), then follows the fleet's transitions."""
        nodes = list(self.fleet.nodes.values())
        done = 0
        slots = asyncio.Semaphore(_CONCURRENCY)

        async def ensure(node: SimulatedNode) -> None:
            nonlocal done
            async with slots:
                await self._ensure_node(node)
            done += 1
            if done % 500 == 0 and done < len(nodes):
                print(f"[simulator] {done}/{len(nodes)} Nodes registered", flush=True)

        await asyncio.gather(*(ensure(node) for node in nodes))
        self.fleet.listeners.append(self._enqueue)
        self._following = True
        self._resyncing = asyncio.create_task(self._resync_forever())

    async def stop(self) -> None:
        """Stops following transitions (pending ones are applied first), then disconnects."""
        try:
            if self._following:
                await self._finish()
        finally:
            await self._api.close()

    async def _finish(self) -> None:
        for queue in list(self._queues.values()):
            await queue.join()
        tasks = [*self._workers, *([self._resyncing] if self._resyncing else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _enqueue(self, transition: Transition) -> None:
        queue = self._queues.get(transition.node)
        if queue is None:
            queue = self._queues[transition.node] = asyncio.Queue()
            self._workers.append(asyncio.create_task(self._run(queue)))
        queue.put_nowait(transition)

    async def _run(self, queue: asyncio.Queue[Transition]) -> None:
        while True:
            transition = await queue.get()
            self._busy.add(transition.node)
            try:
                await self._apply_until_done(transition)
            finally:
                if queue.empty():
                    self._busy.discard(transition.node)
                queue.task_done()

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._resync_s)
            try:
                await self._resync()
            except Exception as error:  # the API server away: the next round tries again
                print(f"[simulator] status resync failed: {type(error).__name__}", flush=True)

    async def _resync(self) -> None:
        """Posts again the boot ID and OS image, and pod readiness, that were written over.

        As a kubelet keeps posting both: kwok's node stages render a Node's status from the
        object as they last saw it, and in a 5,000-node run 83 Nodes went back to their old
        boot ID and OS image after the upgrade.
        """
        nodes = await self._api.items("/api/v1/nodes")
        stale = [
            body["metadata"]["name"]
            for body in nodes
            if self._settled(body["metadata"]["name"])
            and not _shows(body, self.fleet.nodes[body["metadata"]["name"]])
        ]
        for name in stale:
            node = self.fleet.nodes[name]
            status = {"status": _status(node.version, node.boot_id, node)}
            await self._api.call("PATCH", _node(name, "/status"), status)
        pods = await self._api.items("/api/v1/pods", fieldSelector="status.phase=Running")
        unready = [
            pod for pod in pods if self._settled(pod["spec"].get("nodeName")) and _stuck(pod)
        ]
        for pod in unready:
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):  # gone meanwhile
                patch = {"status": {"conditions": _pod_readiness(True)}}
                await self._api.call("PATCH", _pod_status(meta["namespace"], meta["name"]), patch)
        if stale or unready:
            print(
                f"[simulator] posted again the status of {len(stale)} Node(s) showing an older "
                f"boot or OS image and {len(unready)} pod(s) left not Ready on running nodes",
                flush=True,
            )

    def _settled(self, name: str | None) -> bool:
        """A simulated node that is running, handed back to kwok, with no change under way."""
        node = self.fleet.nodes.get(name or "")
        return node is not None and node.power is Power.RUNNING and name not in self._busy

    async def _apply_until_done(self, transition: Transition) -> None:
        """Applies a transition, retrying while the API server is away.

        A kubelet keeps posting its status too; only a Node that no longer exists is given up.
        """
        delay, said = 0.2, False
        while True:
            try:
                await self._apply(transition)
                return
            except ApiError as error:
                if error.status == 404:
                    return
                problem = str(error)
            except Exception as error:  # anything else: said, and tried again
                problem = f"{type(error).__name__}: {error}"
            if not said:
                print(f"[simulator] updating Node {transition.node} failed, retrying: {problem}")
                said = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _ensure_node(self, node: SimulatedNode) -> None:
        try:
            await self._api.call("GET", _node(node.name))
        except ApiError as error:
            if error.status != 404:
                raise
            manifest = kwok.fake_node(
                node.name, control_plane=node.control_plane, os_image=os_image(node.version)
            )
            manifest["status"]["addresses"] = [{"type": "InternalIP", "address": node.address}]
            await self._api.call("POST", "/api/v1/nodes", manifest)
        status = {"status": _status(node.version, node.boot_id, node)}
        await self._api.call("PATCH", _node(node.name, "/status"), status)

    async def _apply(self, transition: Transition) -> None:
        node = self.fleet.nodes[transition.node]
        if transition.power in (Power.REBOOTING, Power.DOWN):
            await self._annotate(transition.node, "true")
            # kwok may post one more heartbeat before it sees the annotation; insist once.
            for _ in range(2):
                status = {"status": {"conditions": [_ready(False, transition.power)]}}
                await self._api.call("PATCH", _node(transition.node, "/status"), status)
                await asyncio.sleep(_KWOK_SETTLE_S)
            await self._set_pods_ready(transition.node, False)
        elif transition.power is Power.RUNNING:
            status = {"status": _status(transition.version, transition.boot_id, node)}
            await self._api.call("PATCH", _node(transition.node, "/status"), status)
            await self._set_pods_ready(transition.node, True)
            await self._annotate(transition.node, None)

    async def _set_pods_ready(self, name: str, ready: bool) -> None:
        """The node's running pods stop with its OS, or start again once it is back."""
        conditions = _pod_readiness(ready)
        pods = await self._api.items("/api/v1/pods", fieldSelector=f"spec.nodeName={name}")
        for pod in pods:
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            if meta.get("deletionTimestamp") or status.get("phase") != "Running":
                continue
            with contextlib.suppress(ApiError):  # gone meanwhile
                patch = {"status": {"conditions": conditions}}
                await self._api.call("PATCH", _pod_status(meta["namespace"], meta["name"]), patch)

    async def _annotate(self, name: str, value: str | None) -> None:
        patch = {"metadata": {"annotations": {kwok.DISREGARD_ANNOTATION: value}}}
        await self._api.call("PATCH", _node(name), patch)


def _status(version: str, boot_id: str, node: SimulatedNode) -> dict[str, Any]:
    return {
        "nodeInfo": {"osImage": os_image(version), "bootID": boot_id},
        "addresses": [
            {"type": "InternalIP", "address": node.address},
            {"type": "Hostname", "address": node.name},
        ],
        "conditions": [_ready(True, Power.RUNNING)],
    }


def _pod_readiness(ready: bool) -> list[dict[str, str]]:
    """A pod's ContainersReady and Ready conditions, changed now."""
    now = _now()
    return [
        {"type": kind, "status": str(ready), "lastTransitionTime": now}
        for kind in ("ContainersReady", "Ready")
    ]


def _shows(body: dict[str, Any], node: SimulatedNode) -> bool:
    """Whether a Node object shows the simulated node's boot ID and OS image."""
    info = (body.get("status") or {}).get("nodeInfo") or {}
    return info.get("bootID") == node.boot_id and info.get("osImage") == os_image(node.version)


def _stuck(pod: dict[str, Any]) -> bool:
    """A pod not Ready for longer than a kubelet would leave it (not terminating)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            since = datetime.datetime.fromisoformat(condition.get("lastTransitionTime") or _now())
            age = datetime.datetime.now(datetime.UTC) - since
            return age.total_seconds() > _POD_SETTLE_S
    return False


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(ready: bool, power: Power) -> dict[str, str]:
    now = _now()
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else f"Node{power.value}",
        "message": "kubelet is posting ready status"
        if ready
        else f"the node's OS is {power.value.lower()} (nodeos simulator)",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
