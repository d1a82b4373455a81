"""`kvswarm sim` as a user runs it: banner with URLs, clean stop on signals, port errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kvswarm.errors import KvswarmError
from kvswarm.sim import SimOptions, spawn_stack, start_stack
from tests.integration.test_sim_http import FAST, get


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Run `kvswarm sim` and read its banner up to the line saying how to stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kvswarm.cli", "sim", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    banner = []
    for line in process.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("Stop with"):
            break
    return process, banner


def _url_after(banner: list[str], label: str) -> str:
    line = next(line for line in banner if label in line)
    return line.split()[-1]


def test_sim_prints_its_urls_and_stops_on_sigint() -> None:
    process, banner = _start_cli()
    try:
        api = _url_after(banner, "OpenAI API")
        assert "simulator" in banner[0]
        assert get(api.removesuffix("/v1") + "/health")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "stopped" in out


def test_sim_exits_zero_on_sigterm() -> None:
    stack = spawn_stack(SimOptions(cost=FAST).with_free_ports())
    stack.stop()
    assert stack.process.returncode == 0


def test_port_in_use_is_a_one_line_error(busy_port: int) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "sim", "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"kvswarm: sim server: port {busy_port} on 127.0.0.1 is already in use "
        "(Address already in use)"
    ]


def test_start_stack_raises_kvswarm_error_on_port_in_use(busy_port: int) -> None:
    with pytest.raises(KvswarmError, match="already in use"):
        start_stack(SimOptions(port=busy_port))


def test_pd_port_in_use_leaves_nothing_running(busy_port: int) -> None:
    options = SimOptions(mode="pd_disaggregated", kv_store="memory").with_free_ports()
    options = SimOptions(**{**options.__dict__, "decoder_port": busy_port})
    with pytest.raises(KvswarmError, match=f"sim decoder: port {busy_port}"):
        start_stack(options)
