"""What each server process kvswarm starts needs: a port that was free, a log file, an end
when its parent dies, a wait for its `/health`, and serving until Ctrl-C or SIGTERM.

Used by the llama.cpp and vLLM servers, the PD proxy, the Mooncake master and the
headless launcher, so that each one starts, retries and waits the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from kvswarm.errors import KvswarmError
from kvswarm.server_handle import ServerHandle, ServerProcess

__all__ = [
    "PortTaken",
    "die_with_parent",
    "free_port",
    "health_ok",
    "log_file",
    "serve_until",
    "start_on_free_port",
    "stopped_by_signals",
    "wait_healthy",
]

_PR_SET_PDEATHSIG = 1

Server = TypeVar("Server", bound=ServerHandle)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (for a process that cannot take 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` asking Linux to send `sig` to the child when the thread that started
    it dies (PR_SET_PDEATHSIG), so that no server outlives its owner."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def health_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether GET `url` answers 200 now (False while the server is not listening yet, or
    answers 503 while it loads)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def log_file(log_path: Path | None, prefix: str) -> tuple[Path, bool]:
    """`log_path`, or a new temporary file named `prefix…log`; and whether it is temporary
    (removed by the server's `stop()` unless its start failed)."""
    if log_path is not None:
        return log_path, False
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(handle)
    return Path(name), True


class PortTaken(Exception):
    """The server could not bind its port (`wait_healthy` saw its bind error)."""


def wait_healthy(
    server: ServerProcess,
    name: str,
    url: str,
    timeout_s: float,
    bind_error: str,
    poll_s: float = 0.1,
) -> float:
    """Poll GET `url` every `poll_s` until it answers 200; the seconds that took. Raises
    `PortTaken` when the server exited with `bind_error` in its log, and a one-line
    `KvswarmError` with the log's last line and path when it exited otherwise or was not
    ready within `timeout_s`."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if not server.running:
            tail = server.log_tail(40)
            if bind_error in tail:
                raise PortTaken()
            raise KvswarmError(
                f"{name} exited with code {server.process.returncode} before it was ready: "
                f"{_last_line(tail)} (log: {server.log_path})"
            )
        if health_ok(url):
            return time.monotonic() - started
        time.sleep(poll_s)
    raise KvswarmError(
        f"{name} was not ready within {timeout_s:.0f} s: {_last_line(server.log_tail(40))} "
        f"(log: {server.log_path})"
    )


def _last_line(log_tail: str) -> str:
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def start_on_free_port(
    name: str,
    host: str,
    port: int,
    spawn: Callable[[int], Server],
    wait_ready: Callable[[Server], None],
) -> Server:
    """`spawn(port)` then `wait_ready(server)`; with `port` 0, on a free port, tried up to
    three times, since another process can take a free port before the server binds it.
    A server that fails to start is stopped before the error propagates."""
    attempts = 3 if port == 0 else 1
    for attempt in range(attempts):
        chosen = port or free_port(host)
        server = spawn(chosen)
        try:
            wait_ready(server)
            return server
        except PortTaken:
            server.stop()
            if attempt == attempts - 1:
                raise KvswarmError(
                    f"{name} could not listen on {host}:{chosen}: port in use"
                ) from None
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (`kvswarm engine ...`
    serving until Ctrl-C); the handlers in place before it are put back after."""
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in _STOP_SIGNALS}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_until(
    stopping: threading.Event, running: Callable[[], bool], ended: Callable[[], str]
) -> None:
    """Return once `stopping` is set; raise `KvswarmError(ended())` if `running()` turns
    false first (the server died under its user)."""
    while not stopping.wait(0.5):
        if not running():
            raise KvswarmError(ended())
