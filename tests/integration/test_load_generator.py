"""The load generator checks itself, and costs no connection per request.

A deliberately blocked event loop (a locustfile whose task holds the loop without
yielding) shows as loop lag in run.json and the summary's bottleneck warning; a steady
keep-alive run makes no connection (nor DNS lookup) per request, for completions or for
the /tokenize calls that size prompts.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvswarm.analysis.summary import BOTTLENECK_WARNING
from kvswarm.client import CompletionRequest, StreamingClient, connect_tcp
from kvswarm.tokens import ServerSizer
from tests.support.processes import REPO, StreamServer, run_dirs, run_locust

BLOCKING_LOCUSTFILE = """\
import gevent.monkey
from locust import task

from kvswarm.locust.users import LLMUser

# The test hook: a sleep that holds the event loop (time.sleep is gevent's under Locust).
hold_the_loop = gevent.monkey.get_original("time", "sleep")


class BlockingUser(LLMUser):
    scenario = "blocking"

    @task
    def ask(self) -> None:
        self.send(messages=[{"role": "user", "content": "Say something."}], max_tokens=4)
        hold_the_loop(0.03)
"""


def test_a_blocked_loop_is_reported_as_loop_lag_with_the_summary_warning(
    stream_server: StreamServer, tmp_path: Path
) -> None:
    locustfile = tmp_path / "locustfile_blocking.py"
    locustfile.write_text(BLOCKING_LOCUSTFILE)
    completed = run_locust(
        ["-f", str(locustfile), "--headless", "-u", "2", "-r", "2", "-t", "3s",
         "--host", stream_server.url, "--kv-results", str(tmp_path / "results")],
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    load = json.loads((run / "run.json").read_text())["load_generator"]["local"]
    assert load["role"] == "standalone" and load["loop_lag_samples"] > 0
    assert load["loop_lag_p99_ms"] > 1.0
    summary = (run / "summary.txt").read_text()
    assert BOTTLENECK_WARNING in summary and BOTTLENECK_WARNING in completed.stdout


def test_a_client_connects_once_and_looks_nothing_up_for_an_ip_target(
    stream_server: StreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[object] = []
    connects: list[object] = []
    real_getaddrinfo = socket.getaddrinfo

    def counting_getaddrinfo(*args: object, **kwargs: object) -> object:
        lookups.append(args)
        return real_getaddrinfo(*args, **kwargs)

    def counting_connect(address: tuple[str, int], timeout: float) -> socket.socket:
        connects.append(address)
        return connect_tcp(address, timeout)

    monkeypatch.setattr(socket, "getaddrinfo", counting_getaddrinfo)
    client = StreamingClient(stream_server.url, connector=counting_connect)
    for i in range(20):
        result = client.complete(
            CompletionRequest(
                endpoint="chat",
                model="m",
                max_tokens=2,
                messages=[{"role": "user", "content": "hi"}],
                request_id=f"keepalive-{i}",
            )
        )
        assert result.ok, result.error
    client.close()
    sizer = ServerSizer(stream_server.url + "/tokenize")
    assert [sizer.count(f"count these {i} words") for i in range(20)] == [4] * 20
    assert len(connects) == 1 and lookups == []
    assert sizer.connections == 1


def test_a_steady_scenario_run_makes_no_connection_per_request(
    stream_server: StreamServer, tmp_path: Path
) -> None:
    """Cold-start users (a /tokenize call per prompt) and fixed-prompt users together:
    once every user is running, requests go on and the server accepts no connection."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "target: {max_model_len: 4096}\ngeneration: {max_tokens: 8}\n"
        "scenarios:\n  cold_start: {unique_tokens: 300}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles"), "ColdStartUser",
         "--kv-config", str(config), "--headless", "-u", "4", "-r", "4", "-t", "8s",
         "--host", stream_server.url, "--kv-results", str(tmp_path / "results")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stats = http.client.HTTPConnection("127.0.0.1", stream_server.port, timeout=5)

    def read_stats() -> dict[str, int]:
        stats.request("GET", "/stats")
        return json.loads(stats.getresponse().read())

    try:
        first = read_stats()
        deadline = time.monotonic() + 60
        while first["served"] < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
            first = read_stats()
        later = first
        while later["served"] < first["served"] + 40 and time.monotonic() < deadline:
            time.sleep(0.1)
            later = read_stats()
    finally:
        stats.close()
        process.wait(timeout=60)
    assert later["served"] >= first["served"] + 40
    assert later["connections"] == first["connections"]
