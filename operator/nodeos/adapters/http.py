"""``JsonSession``: requests to the API server on the event loop, with an ApiClient's settings.

The official kubernetes client is synchronous: each call takes a worker thread, and at a
thousand nodes in flight the hand-offs between threads and urllib3's work per request cost
more CPU than the requests themselves (about a third of the operator's CPU in a 1,000-node
rollout). The engine's frequent requests go through one aiohttp session instead, made from the
same configuration: host, CA (file or data), client certificate, verification and server name,
proxy, and the bearer token, read through the configuration as the official client does.

The token is read again at most every ``AUTH_TTL_S`` (as client-go re-reads a token file at most
once a minute) and at once after a 401, when the request is sent again once with the fresh
token: a rotated service-account token or a refreshed exec credential is used without a
failed request. Read for every request, through a kubeconfig's loader (which sets the whole
configuration again each time, proxies from the environment included), it was 2.3 % of the
operator's CPU in a 1,000-node rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
from kubernetes import client

_TIMEOUT_S = 60.0  # no request of the engine's may hang: it ends as "no answer"
_WHOLE_REQUEST = aiohttp.ClientTimeout(total=_TIMEOUT_S)
AUTH_TTL_S = 10.0
_UNAUTHORIZED = 401


class JsonSession:
    """One connection pool to the API server, opened on first use in the running loop."""

    def __init__(self, configuration: client.Configuration, limit: int) -> None:
        self._config = configuration
        self._limit = limit
        self._host = str(configuration.host).rstrip("/")
        self._ssl: ssl.SSLContext | bool = (
            _ssl_context(configuration) if self._host.startswith("https:") else False
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auth: dict[str, str] = {}
        self._auth_read_at: float | None = None  # time.monotonic() of the last read

    def _with_auth(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` and the Authorization header, if any, read at most every ``AUTH_TTL_S``."""
        now = time.monotonic()
        if self._auth_read_at is None or now - self._auth_read_at >= AUTH_TTL_S:
            setting: Any = self._config.auth_settings().get("BearerToken")
            value = setting.get("value") if setting else None
            self._auth = {"Authorization": str(value)} if value else {}
            self._auth_read_at = now
        return {**headers, **self._auth}

    async def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        data: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, str, bytes]:
        """Sends one request with the Authorization header; returns status, reason and body.

        A 401 sends it once more, with the token read afresh.
        """
        for attempt in range(2):
            sent = self._with_auth(headers)
            async with self._send(method, path, query, sent, data=data) as response:
                status, reason = response.status, response.reason or ""
                body = await response.read()
            if status != _UNAUTHORIZED or attempt == 1:
                break
            self._auth_read_at = None
        return status, reason, body

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, query: dict[str, str], headers: dict[str, str], *, idle_s: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET with the Authorization header whose body is read as it arrives (a watch).

        No deadline for the whole, but at most ``idle_s`` may pass between two reads. After a
        401 the token is read afresh for the next request (the watcher's retry).
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=_TIMEOUT_S, sock_read=idle_s)
        sent = self._with_auth(headers)
        async with self._send("GET", path, query, sent, timeout=timeout) as response:
            if response.status == _UNAUTHORIZED:
                self._auth_read_at = None
            yield response

    async def close(self) -> None:
        """Closes the pool (a later request opens another)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        headers: dict[str, str],
        *,
        data: bytes | None = None,
        timeout: aiohttp.ClientTimeout = _WHOLE_REQUEST,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """The request, through the configuration's proxy and TLS server name."""
        return self._open().request(
            method,
            self._host + path,
            params=query,
            data=data,
            headers=headers,
            proxy=self._config.proxy or None,
            server_hostname=self._config.tls_server_name or None,
            timeout=timeout,
        )

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=_WHOLE_REQUEST)
            self._loop = loop
        return self._session


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    """TLS as the official client sets it up from the same configuration."""
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert or None,
        cadata=configuration.ca_cert_data or None,
    )
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context
