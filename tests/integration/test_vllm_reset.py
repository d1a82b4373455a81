"""The vLLM profile's prefix-cache reset against a server that answers as vLLM 0.32 does:
200 `{"success": false}` while blocks are still held, until they are freed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kvswarm.engines import VLLM


class Refusing(BaseHTTPRequestHandler):
    """Answers `{"success": false}` to the first `refusals` resets, then true."""

    refusals = 0
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        type(self).calls += 1
        success = type(self).calls > type(self).refusals
        body = json.dumps({"success": success}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Refusing]]]:
    handler = type("Handler", (Refusing,), {"refusals": 0, "calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_reset_refused_while_blocks_are_held_is_tried_again_until_it_takes(server) -> None:
    url, handler = server
    handler.refusals = 2
    outcome = VLLM.reset_prefix_cache(url, timeout_s=5)
    assert outcome.status == "reset" and handler.calls == 3


def test_a_reset_never_taken_is_reported_failed_not_reset(server) -> None:
    url, handler = server
    handler.refusals = 10_000
    outcome = VLLM.reset_prefix_cache(url, timeout_s=0.5)
    assert outcome.status == "failed" and "success false" in outcome.detail
