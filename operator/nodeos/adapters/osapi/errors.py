"""Maps gRPC failures to ``OsApiError``: transient (retry), permanent, or credentials.

A node that is rebooting answers Unavailable, refuses connections, resets streams or lets a
deadline pass; those are transient. Permission, argument and precondition failures are
permanent. TLS handshake failures mean the talosconfig does not match the node's CA (or the
server refused our certificate): a credentials problem, reported as such.
"""

from __future__ import annotations

import grpc

from nodeos.ports.osapi import ErrorKind, OsApiError

_TLS_MARKERS = ("handshake", "certificate", "ssl_error", "tsi_", "alert")
_RESET_MARKERS = ("eof", "connection reset", "socket closed", "stream removed", "broken pipe")
_TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


def classify(node: str, endpoint: str, method: str, error: grpc.aio.AioRpcError) -> OsApiError:
    """The ``OsApiError`` for a failed call, with a message a user can act on."""
    code = error.code()
    details = (error.details() or "").strip()
    lowered = details.lower()
    name = code.name if code is not None else "UNKNOWN"
    if code is grpc.StatusCode.UNAVAILABLE and any(m in lowered for m in _TLS_MARKERS):
        return OsApiError(
            node,
            ErrorKind.CREDENTIALS,
            name,
            f"TLS handshake with {endpoint} failed: the node's certificate is not signed by the "
            "talosconfig's CA, or the node refused our client certificate "
            f"({_short(details)})",
        )
    if code is grpc.StatusCode.UNAVAILABLE and "connection refused" in lowered:
        return OsApiError(
            node,
            ErrorKind.TRANSIENT,
            name,
            f"{endpoint} refused the connection (expected while the node reboots)",
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return OsApiError(
            node, ErrorKind.TRANSIENT, name, f"{method} got no answer from {endpoint} in time"
        )
    if code in _TRANSIENT_CODES:
        return OsApiError(
            node, ErrorKind.TRANSIENT, name, f"{method} unavailable: {_short(details)}"
        )
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and any(
        m in lowered for m in _RESET_MARKERS
    ):
        return OsApiError(
            node, ErrorKind.TRANSIENT, name, f"{method}: connection dropped ({_short(details)})"
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return OsApiError(
            node,
            ErrorKind.CREDENTIALS,
            name,
            f"{method}: not authenticated; the talosconfig's client certificate was refused "
            f"({_short(details)})",
        )
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return OsApiError(
            node,
            ErrorKind.PERMANENT,
            name,
            f"{method}: permission denied ({_short(details)}); the talosconfig needs a "
            "certificate with the os:admin role",
        )
    return OsApiError(node, ErrorKind.PERMANENT, name, f"{method} failed: {_short(details)}")


def _short(details: str, limit: int = 300) -> str:
    text = " ".join(details.split()) or "no details"
    return text if len(text) <= limit else text[: limit - 3] + "..."
