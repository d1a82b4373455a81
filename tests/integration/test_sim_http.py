"""The simulator's HTTP layer (keep-alive, chunking, routing), plus the plain-HTTP helpers
the other sim integration tests import. Stacks run in a background thread on free ports."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from kvswarm.sim import CostModel, SimOptions, start_stack
from kvswarm.sim.stack import RunningStack

FAST = CostModel(prefill_base_ms=1.0, prefill_ms_per_token=0.01, decode_base_ms=1.0)


def fast_options(**changes: Any) -> SimOptions:
    """Options with a quick cost model and every port free."""
    cost = changes.pop("cost", FAST)
    return SimOptions(cost=cost, **changes).with_free_ports()


@pytest.fixture
def sim() -> Iterator[RunningStack]:
    with start_stack(fast_options()) as stack:
        yield stack


def words(count: int, tag: str = "w") -> str:
    """A prompt of `count` tokens for the simulator's one-word-one-token tokenizer."""
    return " ".join(f"{tag}{i}" for i in range(count))


def connect(url: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def get(url: str) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = connect(url)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post(
    root_url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST JSON; returns status, lower-cased headers and the decoded JSON body."""
    conn = connect(root_url)
    try:
        conn.request(
            "POST",
            path,
            json.dumps(body),
            {"Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        data = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            json.loads(data),
        )
    finally:
        conn.close()


@dataclass
class Streamed:
    """What a client saw of one streamed response (times from time.monotonic())."""

    status: int
    headers: dict[str, str]
    started_s: float
    events: list[Any] = field(default_factory=list)
    raw_events: list[bytes] = field(default_factory=list)
    text_times_s: list[float] = field(default_factory=list)
    done: bool = False
    broken: bool = False

    @property
    def ttft_s(self) -> float:
        return self.text_times_s[0] - self.started_s

    @property
    def tpot_s(self) -> float:
        times = self.text_times_s
        return (times[-1] - times[0]) / (len(times) - 1)

    @property
    def usage(self) -> dict[str, Any] | None:
        for event in self.events:
            if isinstance(event, dict) and event.get("usage"):
                return event["usage"]
        return None

    @property
    def max_gap_s(self) -> float:
        times = self.text_times_s
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def stream(
    root_url: str,
    body: dict[str, Any],
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> Streamed:
    """POST a streaming request and read its SSE events as they arrive."""
    conn = connect(root_url)
    payload = json.dumps({"stream": True, **body})
    try:
        started = time.monotonic()
        conn.request("POST", path, payload, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        result = Streamed(
            response.status, {k.lower(): v for k, v in response.getheaders()}, started
        )
        if response.status != 200:
            result.events.append(json.loads(response.read()))
            return result
        _read_events(response, result)
        return result
    finally:
        conn.close()


def _read_events(response: http.client.HTTPResponse, result: Streamed) -> None:
    try:
        while True:
            line = response.readline()
            if not line:
                return
            if not line.startswith(b"data: "):
                continue
            now = time.monotonic()
            data = line[6:].strip()
            result.raw_events.append(data)
            if data == b"[DONE]":
                result.done = True
                continue
            try:
                event = json.loads(data)
            except ValueError:
                result.events.append(None)  # malformed
                continue
            result.events.append(event)
            if _has_text(event):
                result.text_times_s.append(now)
    except (http.client.IncompleteRead, ConnectionError, OSError):
        result.broken = True


def _has_text(event: dict[str, Any]) -> bool:
    for choice in event.get("choices") or []:
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        if metric != name:
            continue
        if all(f'{key}="{val}"' in label_text for key, val in labels.items()):
            return float(value)
    return 0.0


def scrape(url: str) -> str:
    status, body = get(url)
    assert status == 200
    return body.decode()


# The HTTP layer's own tests.


def test_health_answers_200(sim: RunningStack) -> None:
    assert get(sim.root_url + "/health")[0] == 200


def test_unknown_path_is_404(sim: RunningStack) -> None:
    assert get(sim.root_url + "/nope")[0] == 404


def test_keep_alive_serves_several_requests_on_one_connection(sim: RunningStack) -> None:
    conn = connect(sim.root_url)
    try:
        for _ in range(3):
            conn.request("POST", "/v1/completions", json.dumps({"prompt": "a b", "max_tokens": 2}))
            response = conn.getresponse()
            assert response.status == 200
            json.loads(response.read())
    finally:
        conn.close()


def test_stream_uses_chunked_transfer_encoding(sim: RunningStack) -> None:
    result = stream(
        sim.root_url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    )
    assert result.headers["transfer-encoding"] == "chunked"
    assert result.headers["content-type"] == "text/event-stream"
    assert result.done


def test_pipelined_requests_are_answered_in_order(sim: RunningStack) -> None:
    host, port = urllib.parse.urlsplit(sim.root_url).netloc.split(":")
    body = b'{"prompt": "a b", "max_tokens": 1}'
    one = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(one + one + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"text_completion") < data.rindex(b"Content-Length: 0")


def test_bad_request_line_gets_400_and_close(sim: RunningStack) -> None:
    host, port = urllib.parse.urlsplit(sim.root_url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 400")
