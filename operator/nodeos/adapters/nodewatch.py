"""``NodeWatch``: every Node as a ``NodeView``, kept current by one LIST and a WATCH.

An informer of our own rather than kopf's: kopf runs a worker per object and, while its indexes
fill, wakes every waiting worker whenever one more object is indexed. For 5,000 Nodes that is
quadratic (minutes before the first plan step) and costs milliseconds per Node event after.

It lists the Nodes (in pages), then watches from the list's resourceVersion and applies the
events in order. A watch that ends is resumed from the last version seen (bookmarks keep it
recent); a 410 Gone, or any error, lists again after a pause, and Nodes missing from the new
list count as deleted. Each change is handed to ``on_change(name, before, after)`` on the
event loop, in order (None: absent). ``ready`` is set once the first list is in, so no engine
plans on part of the fleet.

The HTTP requests go through the kubernetes ApiClient (its auth and TLS) in one daemon thread
of its own (a read blocked on the stream never holds up the process's exit); the lines of the
watch stream are parsed there and passed to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kubernetes import client

from nodeos.core.nodes import NodeView, view_of

OnChange = Callable[[str, NodeView | None, NodeView | None], None]
log = logging.getLogger(__name__)
_PAGE = 500
_WATCH_S = 300  # the server ends each watch after this long; it is resumed at once
_RETRY_S = 1.0


class GoneError(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class NodeWatch:
    """Keeps ``views`` equal to the API server's Nodes, as NodeViews."""

    def __init__(self, api: client.ApiClient, on_change: OnChange) -> None:
        self.api = api
        self.on_change = on_change
        self.views: dict[str, NodeView] = {}
        self.ready = asyncio.Event()
        self._stopping = threading.Event()

    async def run(self) -> None:
        """Lists and watches until cancelled; never gives up."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def follow() -> None:
            try:
                self._follow(loop)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                    loop.call_soon_threadsafe(_settle, ended)

        threading.Thread(target=follow, name="node-watch", daemon=True).start()
        try:
            await ended
        finally:
            self.stop()

    def stop(self) -> None:
        """Asks the watch to end after the event it waits for.

        The thread is not interrupted: closing a stream another thread reads from blocks the
        caller (the event loop) until that read ends. A daemon thread never delays the exit.
        """
        self._stopping.set()

    # -- in the watch's thread -------------------------------------------------------------

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        version = ""
        while not self._stopping.is_set():
            try:
                if not version:
                    items, version = self._list()
                    loop.call_soon_threadsafe(self._replace, items)
                version = self._watch(version, loop)
            except GoneError:
                version = ""
            except Exception as error:  # connection lost, API server restarting: list again
                if self._stopping.is_set():
                    return
                log.warning("watching Nodes failed, listing them again: %s", error)
                version = ""
                self._stopping.wait(_RETRY_S)

    def _list(self) -> tuple[dict[str, NodeView], str]:
        items: dict[str, NodeView] = {}
        token = ""
        while True:
            query = [("limit", str(_PAGE))] + ([("continue", token)] if token else [])
            page = json.loads(self._get("/api/v1/nodes", query).read() or b"{}")
            for item in page.get("items") or []:
                name = item["metadata"]["name"]
                items[name] = view_of(name, item)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items, str(page["metadata"]["resourceVersion"])

    def _watch(self, version: str, loop: asyncio.AbstractEventLoop) -> str:
        query = [
            ("watch", "1"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(_WATCH_S)),
        ]
        response = self._get("/api/v1/nodes", query, stream=True)
        try:
            for line in _lines(response):
                if self._stopping.is_set():
                    break
                event = json.loads(line)
                kind, item = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if item.get("code") == 410:
                        raise GoneError(item.get("message", "gone"))
                    raise RuntimeError(item.get("message", "watch error"))
                version = str((item.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                name = item["metadata"]["name"]
                view = None if kind == "DELETED" else view_of(name, item)
                loop.call_soon_threadsafe(self._apply, name, view)
        finally:
            with contextlib.suppress(Exception):
                response.close()
        return version

    def _get(self, path: str, query: list[tuple[str, str]], stream: bool = False) -> Any:
        method, url, headers, _, _ = self.api.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        timeout = (10.0, _WATCH_S + 30.0) if stream else (10.0, 60.0)
        answer = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout)
        if answer.status == 410:
            raise GoneError(path)
        if not 200 <= answer.status <= 299:
            answer.read()  # type: ignore[no-untyped-call]
            raise RuntimeError(f"HTTP {answer.status} from GET {path}: {answer.data!r:.200}")
        return answer.response

    # -- on the event loop ------------------------------------------------------------------

    def _replace(self, items: dict[str, NodeView]) -> None:
        for name in [name for name in self.views if name not in items]:
            self._apply(name, None)
        for name, view in items.items():
            self._apply(name, view)
        self.ready.set()

    def _apply(self, name: str, view: NodeView | None) -> None:
        before = self.views.get(name)
        if view is None:
            if before is None:
                return
            del self.views[name]
        else:
            self.views[name] = view
        self.on_change(name, before, view)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _lines(response: Any) -> Iterator[bytes]:
    """The newline-separated JSON documents of a watch stream, as they arrive."""
    return split_lines(response.stream(64 * 1024, decode_content=True))


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a byte stream that arrives in chunks.

    Each chunk is split once: splitting off one line at a time copied the rest of the chunk
    for every line, which was most of the watch's CPU at a thousand Nodes.
    """
    parts: list[bytes] = []  # the start of a line that a later chunk ends
    for chunk in chunks:
        *complete, rest = chunk.split(b"\n")
        if complete:
            complete[0] = b"".join([*parts, complete[0]])
            parts = []
            for line in complete:
                if line.strip():
                    yield line
        if rest:
            parts.append(rest)
    tail = b"".join(parts)
    if tail.strip():
        yield tail
