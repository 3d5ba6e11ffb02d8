"""NodeWatch against a small HTTP server that lists and watches Nodes as the API server does.

The server pages its list, streams watch events in pieces that cut lines anywhere, ends a watch
as the API server does after timeoutSeconds, answers a resumed watch with a 410 ERROR event,
and fails one request outright: the watch must end up with the server's Nodes every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client

from nodeos.adapters.nodewatch import NodeWatch
from nodeos.core.nodes import NodeView


def node(name: str, version: int, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": str(version)},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class FakeNodesApi:
    """Nodes at resourceVersions; a script of what each watch request gets."""

    def __init__(self) -> None:
        self.nodes = {f"n-{i}": node(f"n-{i}", 10 + i) for i in range(5)}
        self.version = 20
        self.lists = 0
        self.watches: list[str] = []  # the resourceVersion each watch asked for
        self.script: list[str] = ["events", "gone", "fail", "events-then-hold"]
        self.held = asyncio.Event()
        self.closing = asyncio.Event()

    def change(self, name: str, **fields: Any) -> dict[str, Any]:
        self.version += 1
        self.nodes[name] = node(name, self.version, **fields)
        return {"type": "MODIFIED", "object": self.nodes[name]}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            return self.list_page(request)
        self.watches.append(request.query["resourceVersion"])
        step = self.script.pop(0) if self.script else "events-then-hold"
        if step == "fail":
            return web.Response(status=500, text="etcd is unhappy")
        response = web.StreamResponse()
        await response.prepare(request)
        if step == "gone":
            event = {"type": "ERROR", "object": {"code": 410, "message": "too old"}}
            await response.write(json.dumps(event).encode() + b"\n")
            return response
        events = [self.change("n-1", ready=False), self.change("n-2")]
        if "n-3" in self.nodes:
            events.append({"type": "DELETED", "object": self.nodes.pop("n-3")})
        kind = "MODIFIED" if "n-9" in self.nodes else "ADDED"
        events.append({"type": kind, "object": self.change("n-9")["object"]})
        events.append({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}})
        stream = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        for start in range(0, len(stream), 97):  # pieces that cut lines anywhere
            await response.write(stream[start : start + 97])
            await asyncio.sleep(0)
        if step == "events-then-hold":
            self.held.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), 30)
        return response

    def list_page(self, request: web.Request) -> web.Response:
        self.lists += 1
        names = sorted(self.nodes)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query["limit"])
        page = names[start : start + 2]  # pages of 2, whatever the limit asked
        rest = str(start + 2) if start + 2 < len(names) else ""
        assert limit > 0
        body = {
            "items": [self.nodes[n] for n in page],
            "metadata": {"resourceVersion": str(self.version), "continue": rest},
        }
        return web.json_response(body)


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeNodesApi, str]]:
    api = FakeNodesApi()
    app = web.Application()
    app.router.add_get("/api/v1/nodes", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield api, f"http://127.0.0.1:{port}"
    api.closing.set()
    await runner.cleanup()


async def test_the_views_follow_the_server_through_a_410_and_a_failed_watch(
    served: tuple[FakeNodesApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, host = served
    monkeypatch.setattr("nodeos.adapters.nodewatch._RETRY_S", 0.01)
    changes: list[tuple[str, NodeView | None, NodeView | None]] = []
    watch = NodeWatch(
        client.ApiClient(client.Configuration(host=host)),
        lambda name, before, after: changes.append((name, before, after)),
    )
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(api.held.wait(), 10)
        await asyncio.sleep(0.05)  # the last events are applied once read
        assert sorted(watch.views) == sorted(api.nodes)
        assert not watch.views["n-1"].ready and watch.views["n-2"].ready
        assert "n-3" not in watch.views
        # list, watch (events), resume from the last event's version (410), list again,
        # watch (500), list again, watch (events, held open)
        assert api.lists == 3 * 3  # three lists of three pages
        assert len(api.watches) == 4 and api.watches[1] == "99", api.watches
        assert ("n-3", watch_view(changes, "n-3"), None) in changes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert watch.http._session is None  # the connection is closed on the way out


def watch_view(changes: list[tuple[str, NodeView | None, NodeView | None]], name: str) -> Any:
    """The view of ``name`` just before it was deleted."""
    return next(before for n, before, after in reversed(changes) if n == name and after is None)
