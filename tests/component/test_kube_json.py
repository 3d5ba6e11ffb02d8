"""The engine's requests to the API server on the event loop (``KubeClient._json``), against a
real HTTP server standing in for the API server: what is sent, and how answers become errors."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client

from nodeos.adapters import http
from nodeos.adapters.kube import KubeClient
from nodeos.ports.kube import ConflictError, KubeApiError, NotFoundError


class _Server:
    """Answers each request with the next canned (status, body); remembers what it was sent."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            (request.method, str(request.rel_url), dict(request.headers), await request.read())
        )
        status, body = self.answers.pop(0) if self.answers else (200, {})
        return web.json_response(body, status=status)


@pytest.fixture
async def served() -> AsyncIterator[tuple[_Server, KubeClient]]:
    server = _Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.api_key = {"authorization": "a-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    kube = KubeClient(client.ApiClient(configuration))
    try:
        yield server, kube
    finally:
        await kube.close()
        await runner.cleanup()


async def test_a_request_carries_the_token_the_query_and_times_as_rfc3339(
    served: tuple[_Server, KubeClient],
) -> None:
    server, kube = served
    server.answers = [(201, {"metadata": {"name": "n1.abc"}})]
    await kube.event("Node", "n1", "uid-1", "v1", "Probe", "said once")
    method, url, headers, body = server.seen[-1]
    assert (method, url) == ("POST", "/api/v1/namespaces/default/events")
    assert headers["Authorization"] == "Bearer a-token"
    assert headers["Accept-Encoding"] == "identity", "the API server would gzip every answer"
    assert headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert sent["involvedObject"]["uid"] == "uid-1"
    assert sent["firstTimestamp"].startswith("20") and "T" in sent["firstTimestamp"]

    server.answers = [(200, {"items": [], "metadata": {"resourceVersion": "42"}})]
    listing = await kube.pods_on("n1")
    assert server.seen[-1][1] == "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"
    assert listing.pods == []


async def test_the_token_is_read_at_most_every_ttl_and_at_once_after_a_401(
    served: tuple[_Server, KubeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotated token is used once the cache ages or the API server refuses the old one."""
    server, kube = served
    configuration = kube.api.configuration
    reads: list[str] = []

    def refresh(config: client.Configuration) -> None:  # as a kubeconfig's loader does
        reads.append(config.api_key["authorization"])

    configuration.refresh_api_key_hook = refresh
    clock = [1000.0]
    monkeypatch.setattr(http.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        await kube.annotate_node("n1", "nodeos.dev/x", "y")
    assert len(reads) == 1, "read once within the TTL, not once a request"

    configuration.api_key = {"authorization": "rotated"}
    await kube.annotate_node("n1", "nodeos.dev/x", "y")
    assert server.seen[-1][2]["Authorization"] == "Bearer a-token", "still the cached one"
    clock[0] += http.AUTH_TTL_S
    await kube.annotate_node("n1", "nodeos.dev/x", "y")
    assert server.seen[-1][2]["Authorization"] == "Bearer rotated", "read again once it aged"

    configuration.api_key = {"authorization": "renewed"}
    server.answers = [(401, {"kind": "Status", "message": "Unauthorized"}), (200, {})]
    await kube.annotate_node("n1", "nodeos.dev/x", "y")
    assert [seen[2]["Authorization"] for seen in server.seen[-2:]] == [
        "Bearer rotated",
        "Bearer renewed",
    ], "the refused request is sent once more with the token read afresh"

    server.answers = [(401, {"kind": "Status", "message": "Unauthorized"})] * 2
    with pytest.raises(KubeApiError, match="Unauthorized") as raised:
        await kube.annotate_node("n1", "nodeos.dev/x", "y")
    assert raised.value.status == 401, "a token refused twice is the caller's error"


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, NotFoundError), (409, ConflictError), (422, KubeApiError), (500, KubeApiError)],
)
async def test_an_error_answer_is_the_ports_error_with_the_servers_message(
    served: tuple[_Server, KubeClient], status: int, error: type[Exception]
) -> None:
    server, kube = served
    server.answers = [(status, {"kind": "Status", "message": f"told {status}"})]
    with pytest.raises(error, match=f"told {status}") as raised:
        await kube.annotate_node("n1", "nodeos.dev/x", "y")
    if isinstance(raised.value, KubeApiError):
        assert raised.value.status == status


async def test_no_answer_is_status_zero() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    kube = KubeClient(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}")))
    try:
        with pytest.raises(KubeApiError, match="no answer") as raised:
            await kube.pods_on("n1")
        assert raised.value.status == 0
    finally:
        await kube.close()
