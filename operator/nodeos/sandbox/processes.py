"""Starts, watches and stops the sandbox's child processes, each in its own process group.

A child can be tied to this process's life (Linux ``PR_SET_PDEATHSIG``) so a killed test run
leaves no orphans, or left to run on its own for ``nodeos sandbox up``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """A started component: its name, process id and log file."""

    name: str
    pid: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        """True while the process exists (and is not a zombie we own)."""
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    die_with_parent: bool = True,
) -> Child:
    """Starts ``argv`` in a new session with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    preexec: Callable[[], None] | None = _die_with_parent if die_with_parent else None
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )
    return Child(name=name, pid=process.pid, log=log, process=process)


def kill(child: Child, timeout_s: float = 10.0) -> None:
    """SIGKILLs the child's process group and waits until it is gone."""
    _signal_group(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.alive():
        time.sleep(0.02)


def stop(child: Child, grace_s: float = 10.0) -> None:
    """Sends SIGTERM to the child's process group, then SIGKILL after ``grace_s``."""
    _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and child.alive():
        time.sleep(0.05)
    if child.alive():
        _signal_group(child.pid, signal.SIGKILL)
    if child.process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=5)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, or a note that it is missing."""
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
