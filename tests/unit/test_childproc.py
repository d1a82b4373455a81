"""Starting a server process: a free port retried when taken, a child that ends with its
parent, a log file that is temporary only when none was named."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvswarm.childproc import (
    PortTaken,
    free_port,
    log_file,
    serve_until,
    start_on_free_port,
    stopped_by_signals,
    wait_healthy,
)
from kvswarm.errors import KvswarmError
from kvswarm.server_handle import ServerHandle, ServerProcess


@dataclass
class FakeServer(ServerHandle):
    port: int
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True


@dataclass
class Spawner:
    """Spawns fake servers; the first `taken` of them find their port taken."""

    taken: int
    spawned: list[FakeServer] = field(default_factory=list)

    def spawn(self, port: int) -> FakeServer:
        self.spawned.append(FakeServer(port))
        return self.spawned[-1]

    def wait_ready(self, server: FakeServer) -> None:
        if len(self.spawned) <= self.taken:
            raise PortTaken()


def test_a_taken_free_port_is_given_up_and_another_tried() -> None:
    spawner = Spawner(taken=2)

    server = start_on_free_port("demo", "127.0.0.1", 0, spawner.spawn, spawner.wait_ready)

    assert server is spawner.spawned[2] and not server.stopped
    assert [s.stopped for s in spawner.spawned[:2]] == [True, True]


def test_a_port_taken_three_times_is_one_clear_error() -> None:
    spawner = Spawner(taken=3)

    message = r"^demo could not listen on 127\.0\.0\.1:\d+: port in use$"
    with pytest.raises(KvswarmError, match=message):
        start_on_free_port("demo", "127.0.0.1", 0, spawner.spawn, spawner.wait_ready)
    assert len(spawner.spawned) == 3 and all(s.stopped for s in spawner.spawned)


def test_a_port_the_user_named_is_tried_once() -> None:
    spawner = Spawner(taken=1)

    with pytest.raises(KvswarmError, match="127.0.0.1:8123: port in use"):
        start_on_free_port("demo", "127.0.0.1", 8123, spawner.spawn, spawner.wait_ready)
    assert [s.port for s in spawner.spawned] == [8123]


def test_a_server_that_fails_otherwise_is_stopped_and_the_error_kept() -> None:
    spawned: list[FakeServer] = []

    def spawn(port: int) -> FakeServer:
        spawned.append(FakeServer(port))
        return spawned[-1]

    def wait_ready(server: FakeServer) -> None:
        raise KvswarmError("exited with code 1")

    with pytest.raises(KvswarmError, match="exited with code 1"):
        start_on_free_port("demo", "127.0.0.1", 0, spawn, wait_ready)
    assert len(spawned) == 1 and spawned[0].stopped


def test_a_child_ends_when_the_process_that_started_it_dies() -> None:
    starter = textwrap.dedent(
        """
        import subprocess, sys, time
        from kvswarm.childproc import die_with_parent
        child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent())
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()

    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)


def test_a_named_log_is_kept_and_a_missing_one_is_a_temporary_file(tmp_path: Path) -> None:
    named = tmp_path / "server.log"
    assert log_file(named, "x-") == (named, False)

    path, temporary = log_file(None, "kvswarm-test-")
    try:
        assert temporary and path.is_file() and path.name.startswith("kvswarm-test-")
    finally:
        path.unlink()


def test_a_free_port_can_be_bound() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free_port()))


@dataclass
class PythonServer(ServerProcess):
    """A child `python ARGS` whose output goes to `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    remove_log_on_stop: bool = False

    def __post_init__(self) -> None:
        self.watch_process()

    @classmethod
    def start(cls, args: list[str], log_path: Path) -> PythonServer:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT
            )
        return cls(process, log_path)


def test_a_server_is_ready_when_its_health_answers_200(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")
    port = free_port()
    args = ["-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with PythonServer.start(args, tmp_path / "server.log") as server:
        waited = wait_healthy(server, "demo", f"http://127.0.0.1:{port}/health", 30, "in use")
    assert 0 < waited < 30


def test_a_server_that_could_not_bind_is_port_taken(tmp_path: Path) -> None:
    code = "import sys; print('bind: Address already in use', flush=True); sys.exit(1)"
    server = PythonServer.start(["-c", code], tmp_path / "server.log")
    with server, pytest.raises(PortTaken):
        wait_healthy(server, "demo", "http://127.0.0.1:9/health", 30, "already in use")


def test_a_server_that_exits_is_one_line_with_its_last_words(tmp_path: Path) -> None:
    code = "import sys; print('model file not found', flush=True); sys.exit(3)"
    server = PythonServer.start(["-c", code], tmp_path / "server.log")
    with server, pytest.raises(KvswarmError) as failure:
        wait_healthy(server, "demo", "http://127.0.0.1:9/health", 30, "already in use")
    assert str(failure.value) == (
        "demo exited with code 3 before it was ready: model file not found "
        f"(log: {tmp_path / 'server.log'})"
    )


def test_sigterm_stops_serving_and_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stopped_by_signals() as stopping:
        os.kill(os.getpid(), signal.SIGTERM)
        serve_until(stopping, lambda: True, lambda: "not reached")
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_server_that_dies_while_serving_is_one_error() -> None:
    with stopped_by_signals() as stopping, pytest.raises(KvswarmError, match="^demo died$"):
        serve_until(stopping, lambda: False, lambda: "demo died")


def _alive(pid: int) -> bool:
    """Whether `pid` runs and is not a zombie (an orphan is reaped by init, eventually)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
