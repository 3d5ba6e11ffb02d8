"""Names where a TLS client socket of the test process was made, when one is left open.

A socket dropped unclosed raises a ResourceWarning only when the collector frees it, often in
another test, and the warning names the socket, not its maker. ``trace`` records the stack of
every TLS socket the process wraps, by file descriptor and by local port (a few hundred a
run, about 0.1 ms each): a socket left open keeps its descriptor until it is freed, so no
later socket has taken it (the port is the fallback for a message that shows no descriptor);
``collect_and_check`` runs the collector and turns each socket it found open into an error
that carries that stack. Any other warning raised meanwhile is raised again as it came.
``name_makers_of_unraisable`` does the same for a socket freed outside any test (pytest
reports it as an unraisable exception at the end of the session, naming only the socket).
"""

from __future__ import annotations

import gc
import re
import ssl
import sys
import threading
import traceback
import warnings
from types import SimpleNamespace
from typing import Any

_BY_FD: dict[int, str] = {}  # file descriptor -> where the last socket on it was made
_BY_PORT: dict[int, str] = {}  # local port -> where the last socket bound to it was made
_LOCK = threading.Lock()
_original_wrap = ssl.SSLContext.wrap_socket
_DESCRIPTOR = re.compile(r"SSLSocket fd=(\d+)")
_LOCAL_PORT = re.compile(r"laddr=\('[^']*', (\d+)")


def trace() -> None:
    """Records where each TLS socket is made from now on (idempotent)."""
    if ssl.SSLContext.wrap_socket is not _original_wrap:
        return

    def wrap_socket(self: ssl.SSLContext, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = _original_wrap(self, sock, *args, **kwargs)
        made = f"thread {threading.current_thread().name}\n" + "".join(
            traceback.format_stack(limit=30)[:-1]
        )
        try:
            port: int | None = int(wrapped.getsockname()[1])
        except OSError:
            port = None
        with _LOCK:
            _BY_FD[wrapped.fileno()] = made
            if port:
                _BY_PORT[port] = made
        return wrapped

    ssl.SSLContext.wrap_socket = wrap_socket  # type: ignore[method-assign]


def name_makers_of_unraisable() -> None:
    """Adds the maker's stack to an unraisable exception about a traced socket, then passes it on.

    Wraps the hook in place when called (pytest's, once it is configured).
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        described = repr(unraisable.object)
        if "SSLSocket" in described:
            said = unraisable.err_msg or "Exception ignored in"
            unraisable = SimpleNamespace(
                exc_type=unraisable.exc_type,
                exc_value=unraisable.exc_value,
                exc_traceback=unraisable.exc_traceback,
                err_msg=f"{said} a socket made in {_origin(described)}\n",
                object=unraisable.object,
            )
        previous(unraisable)

    sys.unraisablehook = hook


def _origin(message: str) -> str:
    """Where the socket the message names was made: by its descriptor, else its local port."""
    descriptor = _DESCRIPTOR.search(message)
    port = _LOCAL_PORT.search(message)
    with _LOCK:
        if descriptor is not None and int(descriptor.group(1)) in _BY_FD:
            return _BY_FD[int(descriptor.group(1))]
        if port is not None and int(port.group(1)) in _BY_PORT:
            return _BY_PORT[int(port.group(1))]
    return f"(not a TLS socket made since tracing began: {message})"


def collect_and_check() -> None:
    """Runs the collector; raises AssertionError naming the maker of every socket left open."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    left_open = []
    for warning in caught:
        if issubclass(warning.category, ResourceWarning):
            text = str(warning.message)
            left_open.append(f"{text}\nmade in {_origin(text)}")
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    del caught
    if left_open:
        raise AssertionError("left open, found by the collector:\n" + "\n".join(left_open))
