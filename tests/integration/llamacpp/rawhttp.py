"""Plain-HTTP helpers for talking to llama-server in tests (deliberately not kvswarm's client)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def get(base_url: str, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"{base_url}{path}", timeout=30) as response:
        return response.status, response.read()


def get_json(base_url: str, path: str) -> Any:
    return json.loads(get(base_url, path)[1])


def post_json(base_url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{base_url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class RawStream:
    """A streamed response as received: the body bytes and when each read returned."""

    status: int
    body: bytes
    first_byte_s: float  # from just before the request was sent

    def events(self) -> list[str]:
        """The `data:` payloads, in order (`[DONE]` included)."""
        payloads = []
        for block in self.body.decode().split("\n\n"):
            for line in block.splitlines():
                if line.startswith("data: "):
                    payloads.append(line[len("data: ") :])
        return payloads

    def chunks(self) -> list[dict[str, Any]]:
        """The JSON chunks (without `[DONE]`)."""
        return [json.loads(event) for event in self.events() if event != "[DONE]"]


def stream(base_url: str, path: str, body: dict[str, Any]) -> RawStream:
    """POST `body` and read the whole SSE response, keeping its bytes exactly."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        first = response.read1(65536)
        first_byte_s = time.perf_counter() - started
        rest = response.read()
        return RawStream(response.status, first + rest, first_byte_s)
    finally:
        connection.close()


def metrics(base_url: str) -> dict[str, float]:
    """`GET /metrics` as {sample name: value} (llama.cpp's samples carry no labels)."""
    values = {}
    for line in get(base_url, "/metrics")[1].decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
