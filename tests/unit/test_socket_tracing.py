"""The test bed names the maker of a TLS socket that a test leaves open."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers import sockets
from nodeos import pki


def _tls_server(tmp_path: Path) -> tuple[socket.socket, ssl.SSLContext, ssl.SSLContext]:
    ca = pki.CertificateAuthority.create("test-ca")
    pair = ca.issue("srv", ip_addresses=("127.0.0.1",), server=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(
        str(pki.write_pem(tmp_path / "srv.crt", pair.cert_pem)),
        str(pki.write_pem(tmp_path / "srv.key", pair.key_pem, secret=True)),
    )
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    return listener, server, client


def open_and_drop(client: ssl.SSLContext, port: int) -> None:
    """Connects, then drops the socket unclosed inside a reference cycle."""
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    cycle["sock"] = client.wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
    )


def test_a_socket_left_open_is_reported_with_the_stack_that_made_it(tmp_path: Path) -> None:
    listener, server, client = _tls_server(tmp_path)
    accepted: list[ssl.SSLSocket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(server.wrap_socket(conn, server_side=True))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sockets.trace()
        open_and_drop(client, listener.getsockname()[1])
        thread.join(10)
        with pytest.raises(AssertionError) as raised:
            sockets.collect_and_check()
        assert "unclosed <ssl.SSLSocket" in str(raised.value)
        assert "in open_and_drop" in str(raised.value), str(raised.value)
        sockets.collect_and_check()  # reported once: nothing is left
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_socket_freed_outside_a_test_is_reported_with_the_stack_that_made_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener, server, client = _tls_server(tmp_path)
    accepted: list[ssl.SSLSocket] = []
    seen: list[Any] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(server.wrap_socket(conn, server_side=True))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    try:
        sockets.trace()
        sockets.name_makers_of_unraisable()
        made = open_and_keep(client, listener.getsockname()[1])
        thread.join(10)
        sys.unraisablehook(
            SimpleNamespace(
                exc_type=ResourceWarning,
                exc_value=ResourceWarning(f"unclosed {made!r}"),
                exc_traceback=None,
                err_msg=None,
                object=made,
            )
        )
        made.close()
        assert len(seen) == 1
        assert seen[0].object is made
        assert "in open_and_keep" in seen[0].err_msg, seen[0].err_msg
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def open_and_keep(client: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    """Connects and returns the socket."""
    return client.wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
    )
