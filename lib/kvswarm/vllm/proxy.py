"""kvswarm's PD proxy in front of a vLLM prefiller and decoder, with per-request phases.

As vLLM's disaggregated-serving example proxy does, each completion (`/v1/completions`,
`/v1/chat/completions`) is sent twice:

1. to the prefiller, as it came but with `max_tokens` 1 and not streamed: the prefiller
   computes the prompt's KV and its connector saves it to the store (kv_producer);
2. to the decoder, as it came: its connector finds the prompt's KV in the store, loads
   it instead of computing it (kv_consumer), and the decoder streams the answer, which
   the proxy relays chunk by chunk.

A prefiller error is the client's answer; the decoder is then not asked. Every other
route (`/v1/models`, `/tokenize`, `/version`, ...) goes to the decoder, and
`POST /reset_prefix_cache` to both. `/health` answers 200 when both instances do.
`/metrics` is the decoder's info gauges only (`vllm:cache_config_info`, which names the
KV block size): kvswarm scrapes the prefiller's and decoder's own pages as
`metrics_endpoints`, and a full copy here would count the decoder's counters twice.

What the proxy measures, per request, in response headers (the vLLM engine profile reads
them into `server_*_ms` of requests.csv), all in milliseconds on the proxy's clock:

- `X-Kvswarm-Prefill-Ms`: the prefiller's round trip (queue + prefill of the tokens its
  own prefix cache lacks + one decode step + saving the KV to the store).
- `X-Kvswarm-Transfer-Ms`: from sending the request to the decoder to its first body
  chunk: the decoder's KV load from the store, plus its queueing, the prompt tokens the
  store could not give it (at least the last one) and the first decode step. An upper
  bound of the transfer, not the transfer alone: vLLM does not report the latter per
  request.
- `X-Kvswarm-Decode-Ms`: from the decoder's first body chunk to its last (a trailer of
  streamed responses, whose head goes out with the first chunk). Not streamed: the
  decoder's whole round trip, and no transfer header.
- `X-Kvswarm-Prefill-Cached-Tokens`: the prefiller's `cached_tokens`, i.e. its own
  prefix-cache hit. The response's `usage` is the decoder's, whose `cached_tokens`
  also counts the tokens it loaded from the store (nearly the whole prompt).
- `X-Kvswarm-Prefill-Created-Cache-Tokens`: the prefiller's `created_cache_tokens`, the
  prompt tokens it computed and wrote to its prefix cache (and, through its connector,
  to the store).

Run it as `python -m kvswarm.vllm.proxy --prefiller URL --decoder URL --port 0
--print-json`: it prints `{"url": ...}` once listening and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections import deque
from collections.abc import Iterator
from time import monotonic
from urllib.parse import urlsplit

import gevent
import gevent.event
import httptools
from gevent import socket

from kvswarm.sim.http_server import HttpServer, Request, ResponseWriter
from kvswarm.sim.protocol import error_body

__all__ = [
    "DECODE_HEADER",
    "PREFILL_CACHED_HEADER",
    "PREFILL_CREATED_HEADER",
    "PREFILL_HEADER",
    "TRANSFER_HEADER",
    "PdProxy",
    "info_gauges",
    "Upstream",
    "main",
    "prefill_body",
]

PREFILL_HEADER = "X-Kvswarm-Prefill-Ms"
TRANSFER_HEADER = "X-Kvswarm-Transfer-Ms"
DECODE_HEADER = "X-Kvswarm-Decode-Ms"
PREFILL_CACHED_HEADER = "X-Kvswarm-Prefill-Cached-Tokens"
PREFILL_CREATED_HEADER = "X-Kvswarm-Prefill-Created-Cache-Tokens"
COMPLETION_PATHS = ("/v1/completions", "/v1/chat/completions")
# Response headers not relayed: the proxy frames its own responses.
_HOP_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "trailer",
        "connection",
        "content-type",
        "server",
        "date",
    }
)
UPSTREAM_TIMEOUT_S = 600.0


class UpstreamError(Exception):
    """The prefiller or decoder could not be reached, or closed mid-response."""


class _Reply:
    """httptools callbacks for one upstream response: head, then body pieces as they come."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.pieces: deque[bytes] = deque()
        self.head_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.pieces.append(bytes(body))

    def on_message_complete(self) -> None:
        self.complete = True


class UpstreamResponse:
    """A response being read from an upstream: `status`, `headers`, then `chunks()`."""

    def __init__(self, sock: socket.socket, reply: _Reply, parser: httptools.HttpResponseParser):
        self._sock = sock
        self._reply = reply
        self._parser = parser
        self.status = reply.status
        self.headers = reply.headers

    def chunks(self) -> Iterator[bytes]:
        """The body's pieces, de-chunked, each as soon as it arrives; closes at the end."""
        reply = self._reply
        try:
            while True:
                while reply.pieces:
                    yield reply.pieces.popleft()
                if reply.complete:
                    return
                _feed(self._sock, self._parser)
        finally:
            self.close()

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self._sock.close()


def _feed(sock: socket.socket, parser: httptools.HttpResponseParser) -> None:
    try:
        data = sock.recv(65536)
    except OSError as exc:
        raise UpstreamError(f"reading the response failed: {exc}") from None
    if not data:
        raise UpstreamError("the connection closed before the response ended")
    parser.feed_data(data)


class Upstream:
    """One vLLM instance's HTTP address; a fresh connection per request (loopback)."""

    def __init__(self, url: str, name: str) -> None:
        parts = urlsplit(url)
        self.name = name
        self.url = url.rstrip("/")
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)

    def open(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> UpstreamResponse:
        """Send a request; return once the response's head has arrived."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            sock = socket.create_connection(self.address, timeout=UPSTREAM_TIMEOUT_S)
            sock.sendall(head + body)
        except OSError as exc:
            raise UpstreamError(f"{self.name} at {self.url}: {exc}") from None
        reply = _Reply()
        parser = httptools.HttpResponseParser(reply)
        try:
            while not reply.head_done:
                _feed(sock, parser)
        except (UpstreamError, httptools.HttpParserError) as exc:
            sock.close()
            raise UpstreamError(f"{self.name} at {self.url}: {exc}") from None
        reply.status = parser.get_status_code()
        return UpstreamResponse(sock, reply, parser)

    def fetch(self, method: str, path: str, body: bytes = b"") -> tuple[UpstreamResponse, bytes]:
        response = self.open(method, path, body)
        try:
            return response, response.read()
        except (UpstreamError, httptools.HttpParserError) as exc:
            raise UpstreamError(f"{self.name} at {self.url}: {exc}") from None


def prefill_body(data: dict[str, object]) -> bytes:
    """The request for the prefiller: one output token, not streamed."""
    prefill = {k: v for k, v in data.items() if k not in ("stream_options", "min_tokens")}
    prefill["max_tokens"] = 1
    if "max_completion_tokens" in prefill:
        prefill["max_completion_tokens"] = 1
    prefill["stream"] = False
    return json.dumps(prefill).encode()


def info_gauges(page: bytes) -> bytes:
    """The `*_info` metrics of a Prometheus text page (with their HELP and TYPE lines)."""
    kept = []
    for line in page.splitlines(keepends=True):
        text = line.decode("utf-8", "replace")
        name = text.split()[2] if text.startswith("#") and len(text.split()) > 2 else text
        if name.partition("{")[0].partition(" ")[0].endswith("_info"):
            kept.append(line)
    return b"".join(kept)


def _prefill_cache(body: bytes) -> list[tuple[str, str]]:
    """`X-Kvswarm-Prefill-Cached-Tokens` and `-Created-Cache-Tokens`: what the prefiller
    found in its own prefix cache and what it computed and wrote there."""
    try:
        usage = json.loads(body).get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
    except (ValueError, AttributeError):
        return []
    headers = []
    for header, key in ((PREFILL_CACHED_HEADER, "cached_tokens"),
                        (PREFILL_CREATED_HEADER, "created_cache_tokens")):  # fmt: skip
        value = details.get(key) if isinstance(details, dict) else None
        if isinstance(value, int):
            headers.append((header, str(value)))
    return headers


def _relayed(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers.items() if name not in _HOP_HEADERS]


class PdProxy:
    """The request handler: prefiller first (one token), then the decoder, relayed."""

    def __init__(self, prefiller: Upstream, decoder: Upstream) -> None:
        self.prefiller = prefiller
        self.decoder = decoder

    def __call__(self, request: Request, writer: ResponseWriter) -> None:
        try:
            if request.method == "POST" and request.path in COMPLETION_PATHS:
                return self._complete(request, writer)
            if request.path == "/health":
                return self._health(writer)
            if request.path == "/metrics":
                return self._info_gauges(writer)
            if request.method == "POST" and request.path == "/reset_prefix_cache":
                return self._reset(request, writer)
            self._pass(self.decoder, request, writer)
        except UpstreamError as exc:
            print(f"kvswarm pd proxy: {request.method} {request.path}: {exc}", file=sys.stderr)
            if not writer.started:
                writer.keep_alive = False
                return writer.send(502, error_body(502, str(exc), "BadGateway"))
            writer.abort()

    def _complete(self, request: Request, writer: ResponseWriter) -> None:
        try:
            data = json.loads(request.body)
        except ValueError:
            return self._pass(self.decoder, request, writer)
        started = monotonic()
        prefilled, body = self.prefiller.fetch("POST", request.path, prefill_body(data))
        prefill_ms = (monotonic() - started) * 1000
        if prefilled.status != 200:
            content_type = prefilled.headers.get("content-type", "application/json")
            return writer.send(prefilled.status, body, content_type, _relayed(prefilled.headers))
        phases = [(PREFILL_HEADER, f"{prefill_ms:.3f}"), *_prefill_cache(body)]
        sent = monotonic()
        decoding = self.decoder.open("POST", request.path, request.body)
        content_type = decoding.headers.get("content-type", "application/json")
        headers = _relayed(decoding.headers)
        if decoding.status != 200 or not content_type.startswith("text/event-stream"):
            whole = decoding.read()
            phases.append((DECODE_HEADER, f"{(monotonic() - sent) * 1000:.3f}"))
            return writer.send(decoding.status, whole, content_type, headers + phases)
        self._relay_stream(decoding, writer, headers, phases, sent)

    def _relay_stream(
        self,
        decoding: UpstreamResponse,
        writer: ResponseWriter,
        headers: list[tuple[str, str]],
        phases: list[tuple[str, str]],
        sent: float,
    ) -> None:
        chunks = decoding.chunks()
        try:
            first = next(chunks, b"")
            first_s = monotonic()
            phases.append((TRANSFER_HEADER, f"{(first_s - sent) * 1000:.3f}"))
            writer.start_stream(200, "text/event-stream", headers + phases, first, (DECODE_HEADER,))
            for chunk in chunks:
                writer.write(chunk)
            decode_ms = (monotonic() - first_s) * 1000
            writer.end_stream(trailers=[(DECODE_HEADER, f"{decode_ms:.3f}")])
        finally:
            chunks.close()

    def _health(self, writer: ResponseWriter) -> None:
        for upstream in (self.prefiller, self.decoder):
            response, _ = upstream.fetch("GET", "/health")
            if response.status != 200:
                message = f"{upstream.name} /health answered {response.status}"
                return writer.send(503, error_body(503, message, "ServiceUnavailable"))
        writer.send(200, b"", "text/plain")

    def _info_gauges(self, writer: ResponseWriter) -> None:
        response, body = self.decoder.fetch("GET", "/metrics")
        if response.status != 200:
            return writer.send(response.status, body, "text/plain")
        writer.send(200, info_gauges(body), "text/plain; version=0.0.4; charset=utf-8")

    def _reset(self, request: Request, writer: ResponseWriter) -> None:
        replies = [
            u.fetch("POST", request.path, request.body) for u in (self.prefiller, self.decoder)
        ]
        failed = [(r, b) for r, b in replies if r.status != 200]
        response, body = failed[0] if failed else replies[-1]
        content_type = response.headers.get("content-type", "application/json")
        writer.send(response.status, body, content_type)

    def _pass(self, upstream: Upstream, request: Request, writer: ResponseWriter) -> None:
        target = request.path + (f"?{request.query}" if request.query else "")
        content_type = request.headers.get("content-type", "application/json")
        response = upstream.open(request.method, target, request.body, content_type)
        body = response.read()
        reply_type = response.headers.get("content-type", "application/json")
        writer.send(response.status, body, reply_type, _relayed(response.headers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvswarm.vllm.proxy",
        description="kvswarm's PD proxy: prefill on one vLLM, decode on another",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--prefiller", required=True, help="the prefiller's URL (no /v1)")
    parser.add_argument("--decoder", required=True, help="the decoder's URL (no /v1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0: a free one")
    parser.add_argument("--print-json", action="store_true", help='print {"url": ...} when up')
    args = parser.parse_args(argv)
    proxy = PdProxy(Upstream(args.prefiller, "prefiller"), Upstream(args.decoder, "decoder"))
    server = HttpServer(args.host, args.port, proxy, "pd proxy")
    server.start()
    stopping = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    announcement = json.dumps({"url": server.url}) if args.print_json else server.url
    print(announcement, flush=True)
    stopping.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
