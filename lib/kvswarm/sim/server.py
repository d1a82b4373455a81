"""The OpenAI-compatible HTTP routes of one simulated endpoint.

`SimServer` answers `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/tokenize`,
`/health`, `/version`, `/metrics` and `POST /reset_prefix_cache` like vLLM (with
`VLLM_SERVER_DEV_MODE=1`), plus `/sim/requests/<id>` (the phase timings of a recent
request). Completions are served by a backend (one engine, or the PD
path); the entry point of a stack also injects faults and writes the ground-truth log.

Each response carries the request's phases in headers: `X-Request-Id`, `X-Sim-Queue-Ms`,
`X-Sim-Prefill-Ms`, `X-Sim-Transfer-Ms`, `X-Sim-Prompt-Tokens`, `X-Sim-Cached-Tokens`,
and `X-Sim-Decode-Ms` (a trailer of streamed responses, whose head goes out with the
first token, before decoding). A stream's head is written when the first token is ready,
together with the first chunk.

A client that goes away is noticed at the next write (vLLM notices it sooner): until
then its request keeps its place in the queue or its slot, as if still wanted.

Faults (`kvswarm.sim.faults`) are drawn here, at the stack's entry point, when a request
has been parsed; each is counted and logged when it is injected.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import OrderedDict
from time import monotonic
from typing import Any

import gevent
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kvswarm import __version__
from kvswarm.sim.engine import Backend, Generation, sleep_until
from kvswarm.sim.faults import SLOW_START, Draw, FaultInjector, FaultLog, fault_token_index
from kvswarm.sim.groundtruth import GroundTruthLog, RequestTrace
from kvswarm.sim.http_server import ClientGone, HttpServer, Request, ResponseWriter
from kvswarm.sim.metrics import FastHistogram, SimMetrics
from kvswarm.sim.protocol import (
    DONE_EVENT,
    CompletionRequest,
    Endpoint,
    RequestError,
    ServedModel,
    StreamEncoder,
    check_model,
    completion_body,
    error_body,
    parse_completion,
    parse_json,
    prompt_of,
)
from kvswarm.sim.tokenizer import token_ids

SIMULATOR_NOTE = (
    "kvswarm simulated serving stack: no model runs here; latencies come from a cost model"
)
# Faults answered before any generation; faults injected mid-stream; SSE-only faults.
_AT_ONCE = ("error", "rate_limited", "unavailable", "disconnect_before_head", "not_sse")
_MID_STREAM = (
    "disconnect",
    "stall",
    "malformed_chunk",
    "error_in_stream",
    "huge_chunk",
    "utf8_split",
)
_STREAM_ONLY = ("huge_chunk", "utf8_split", "no_done")
_ENDLESS = 1 << 62  # the token count of a stream that never ends
_ERROR_STATUS = {"rate_limited": 429, "unavailable": 503}
_ERROR_TYPE = {429: "RateLimitError", 503: "ServiceUnavailableError"}
_NOT_SSE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The upstream server is not answering "
    b"(kvswarm sim fault injection).</p></body></html>\n"
)
# Multi-byte characters; a `utf8_split` event is cut inside the first of the cup's bytes.
_UTF8_TEXT = " naïve café ☕ 日本語"
_UTF8_CUT = "☕".encode()
_RECENT_REQUESTS = 10_000
_REQUEST_PATH = re.compile(r"^/sim/requests/(?P<id>[^/]+)$")


class SimServer:
    """The request handler of one simulated endpoint (entry point or PD instance)."""

    def __init__(
        self,
        *,
        backend: Backend,
        served: ServedModel,
        registry: CollectorRegistry,
        lateness: FastHistogram,
        sim_metrics: SimMetrics | None = None,
        faults: FaultInjector | None = None,
        ground_truth: GroundTruthLog | None = None,
        fault_log: FaultLog | None = None,
    ) -> None:
        self.backend = backend
        self.served = served
        self.registry = registry
        self.lateness = lateness
        self.sim_metrics = sim_metrics
        self.faults = faults
        self.ground_truth = ground_truth
        self.fault_log = fault_log
        # The server this handler answers on (set by the stack): `refuse_connections`
        # closes its listener for a while.
        self.listener: HttpServer | None = None
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._created = int(time.time())

    def __call__(self, request: Request, writer: ResponseWriter) -> None:
        path = request.path
        if request.method == "POST":
            if path == "/v1/chat/completions":
                return self._complete(request, writer, "chat")
            if path == "/v1/completions":
                return self._complete(request, writer, "completions")
            if path == "/tokenize":
                return self._tokenize(request, writer)
            if path == "/reset_prefix_cache":
                self.backend.reset_prefix_cache()
                return writer.send(200, b"", "text/plain")
        elif request.method in ("GET", "HEAD"):
            if path in ("/health", "/ping"):
                return writer.send(200, b"", "text/plain")
            if path == "/metrics":
                return writer.send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
            if path == "/v1/models":
                return writer.send(200, self._models())
            if path == "/version":
                return writer.send(200, orjson.dumps({"version": f"kvswarm-sim {__version__}"}))
            match = _REQUEST_PATH.match(path)
            if match:
                return self._request_timings(match["id"], writer)
        writer.send(404, b'{"detail":"Not Found"}')

    def _models(self) -> bytes:
        return orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.served.name,
                        "object": "model",
                        "created": self._created,
                        "owned_by": "kvswarm-sim",
                        "root": self.served.name,
                        "parent": None,
                        "max_model_len": self.served.max_model_len,
                        "permission": [],
                        "simulator": True,
                        "description": SIMULATOR_NOTE,
                    }
                ],
            }
        )

    def _tokenize(self, request: Request, writer: ResponseWriter) -> None:
        try:
            data = parse_json(request.body)
            check_model(data, self.served)
            endpoint: Endpoint = "chat" if "messages" in data else "completions"
            tokens = prompt_of(data, endpoint)
        except RequestError as exc:
            return writer.send(exc.status, exc.body())
        body = {
            "count": len(tokens),
            "max_model_len": self.served.max_model_len,
            "tokens": token_ids(tokens),
        }
        writer.send(200, orjson.dumps(body))

    def _request_timings(self, request_id: str, writer: ResponseWriter) -> None:
        timings = self._recent.get(request_id)
        if timings is None:
            return writer.send(404, error_body(404, f"no recent request {request_id}"))
        writer.send(200, orjson.dumps(timings))

    # completions

    def _complete(self, request: Request, writer: ResponseWriter, endpoint: Endpoint) -> None:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        trace = RequestTrace(request_id, endpoint, False, request.received_s)
        try:
            self._serve_completion(request, writer, endpoint, trace)
        except ClientGone:
            trace.outcome = "client_disconnect"
            raise
        finally:
            self._record(trace)

    def _serve_completion(
        self, request: Request, writer: ResponseWriter, endpoint: Endpoint, trace: RequestTrace
    ) -> None:
        try:
            completion = parse_completion(request.body, endpoint, self.served)
        except RequestError as exc:
            trace.status, trace.outcome = exc.status, "bad_request"
            return writer.send(exc.status, exc.body(), headers=[("X-Request-Id", trace.request_id)])
        trace.stream = completion.stream
        trace.prompt_tokens = completion.prompt_tokens
        draw = self._draw_fault(trace)
        fault = draw.kind if draw is not None else None
        if fault == "disconnect_before_head" and request.sequence > 1:
            # On a reused connection a client cannot tell this from a keep-alive
            # connection closed while idle, and retries it (as kvswarm does): first
            # requests of a connection only, so every injected one is a `disconnect`.
            draw, fault = None, None
        if draw is not None and fault in _AT_ONCE:
            return self._answer_at_once(writer, trace, draw)
        if fault == "refuse_connections":
            self._refuse_connections(trace)
            fault = None  # this request itself is served as usual
        elif fault in _STREAM_ONLY and not completion.stream:
            fault = None
        generation = self.backend.begin(completion, trace.slowdown, trace.receipt_s)
        trace.cached_tokens = generation.cached_tokens
        trace.queue_s = generation.queue_s
        trace.prefill_s = generation.prefill_s
        trace.transfer_s = generation.transfer_s
        try:
            if completion.stream:
                self._stream(completion, generation, writer, fault, trace)
            else:
                self._respond_whole(completion, generation, writer, fault, trace)
        finally:
            sent = trace.output_tokens
            if completion.stream and trace.first_token_s is not None:
                trace.decode_s = (trace.last_token_s or trace.first_token_s) - trace.first_token_s
            generation.finish(sent, "length" if sent == completion.max_tokens else "abort")

    def _draw_fault(self, trace: RequestTrace) -> Draw | None:
        if self.faults is None:
            return None
        trace.slowdown = self.faults.slowdown(trace.receipt_s)
        if trace.slowdown > 1.0:
            self._count_fault(SLOW_START)
        return self.faults.draw()

    def _count_fault(self, kind: str) -> None:
        if self.sim_metrics is not None:
            self.sim_metrics.faults_injected[kind].inc()

    def _inject(self, trace: RequestTrace, kind: str, **details: object) -> None:
        """Count, trace and log a fault at the moment it happens."""
        self._count_fault(kind)
        trace.fault, trace.outcome = kind, "fault"
        if self.fault_log is not None:
            self.fault_log.injected(trace.request_id, kind, **details)

    def _answer_at_once(self, writer: ResponseWriter, trace: RequestTrace, draw: Draw) -> None:
        """The faults that answer (or drop) a request before any generation."""
        assert self.faults is not None
        config = self.faults.config
        kind = draw.kind
        headers = [("X-Request-Id", trace.request_id)]
        if kind == "disconnect_before_head":
            self._inject(trace, kind)
            trace.status = 0
            return writer.abort()
        if kind == "not_sse":
            self._inject(trace, kind, status=200)
            return writer.send(200, _NOT_SSE_PAGE, "text/html; charset=utf-8", headers)
        status = _ERROR_STATUS.get(kind, config.error_status)
        retry_after = config.retry_after_s if draw.retry_after else None
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        self._inject(trace, kind, status=status, retry_after_s=retry_after)
        trace.status = status
        message = "simulated error (kvswarm sim fault injection)"
        body = error_body(status, message, _ERROR_TYPE.get(status, "ServerError"))
        writer.send(status, body, headers=headers)

    def _refuse_connections(self, trace: RequestTrace) -> None:
        assert self.faults is not None
        seconds = self.faults.config.refuse_s
        self._inject(trace, "refuse_connections", refuse_s=seconds)
        if self.listener is not None:
            self.listener.refuse_connections(seconds, self._log_not_listening)

    def _log_not_listening(self, from_unix_s: float, until_unix_s: float) -> None:
        if self.fault_log is not None:
            self.fault_log.not_listening(from_unix_s, until_unix_s)

    def _headers(self, trace: RequestTrace) -> list[tuple[str, str]]:
        return [
            ("X-Request-Id", trace.request_id),
            ("X-Sim-Queue-Ms", f"{trace.queue_s * 1000:.3f}"),
            ("X-Sim-Prefill-Ms", f"{trace.prefill_s * 1000:.3f}"),
            ("X-Sim-Transfer-Ms", f"{trace.transfer_s * 1000:.3f}"),
            ("X-Sim-Prompt-Tokens", str(trace.prompt_tokens)),
            ("X-Sim-Cached-Tokens", str(trace.cached_tokens)),
        ]

    def _stream(
        self,
        completion: CompletionRequest,
        generation: Generation,
        writer: ResponseWriter,
        fault: str | None,
        trace: RequestTrace,
    ) -> None:
        """Stream the tokens on schedule; `trace.output_tokens` counts those written."""
        response_id = ("chatcmpl-" if completion.endpoint == "chat" else "cmpl-") + trace.request_id
        encoder = StreamEncoder(
            completion.endpoint, response_id, int(time.time()), self.served.name
        )
        total = completion.max_tokens
        fault_at = fault_token_index(total) if fault in _MID_STREAM else -1
        engine = generation.engine
        slowdown = generation.seq.slowdown
        lateness = self.lateness.observe
        itl = engine.metrics.inter_token_latency.observe
        scheduled = generation.ready_s
        if fault == "never_ending":
            self._inject(trace, fault)
            total = _ENDLESS
        elif fault == "stall_first_token":
            scheduled = self._stall_first_token(trace)

        first = encoder.first() + encoder.token(0, total == 1)
        writer.start_stream(
            200, "text/event-stream", self._headers(trace), first, trailers=("X-Sim-Decode-Ms",)
        )
        last_write = monotonic()
        trace.first_token_s = trace.last_token_s = last_write
        lateness(last_write - scheduled)
        sent = trace.output_tokens = 1
        while sent <= total:
            if sent == fault_at:
                scheduled, ended = self._mid_stream_fault(fault, encoder, writer, trace, scheduled)
                if ended:
                    return
            if sent == total:
                sleep_until(scheduled)  # a stall after the last token delays the end
                break
            scheduled += engine.tpot_s() * slowdown
            delay = scheduled - monotonic()
            if delay > 0:
                gevent.sleep(delay)
            writer.write(encoder.token(sent, sent == total - 1))
            now = monotonic()
            lateness(now - scheduled)
            itl(now - last_write)
            trace.last_token_s = last_write = now
            sent = trace.output_tokens = sent + 1
        tail = DONE_EVENT
        if fault == "no_done":
            self._inject(trace, fault)
            tail = b""
        if completion.include_usage:
            tail = encoder.usage(completion.prompt_tokens, sent, trace.cached_tokens) + tail
        decode_ms = (last_write - trace.first_token_s) * 1000
        writer.end_stream(tail, trailers=[("X-Sim-Decode-Ms", f"{decode_ms:.3f}")])

    def _mid_stream_fault(
        self,
        fault: str | None,
        encoder: StreamEncoder,
        writer: ResponseWriter,
        trace: RequestTrace,
        scheduled: float,
    ) -> tuple[float, bool]:
        """Inject a stream fault; returns the new schedule and whether the stream ended."""
        assert fault is not None and self.faults is not None
        self._inject(trace, fault)
        if fault == "disconnect":
            writer.abort()
            return scheduled, True
        if fault == "error_in_stream":
            event = encoder.error("simulated error in stream (kvswarm sim fault injection)")
            writer.end_stream(event + DONE_EVENT)
            return scheduled, True
        if fault == "malformed_chunk":
            writer.write(encoder.malformed())
        elif fault == "stall":
            scheduled += self.faults.config.stall_s
        elif fault == "huge_chunk":
            size = self.faults.config.huge_chunk_bytes
            writer.write(encoder.text(("lorem ipsum " * (size // 12 + 1))[:size]))
        elif fault == "utf8_split":
            event = encoder.text(_UTF8_TEXT)
            cut = event.index(_UTF8_CUT) + 1
            writer.write(event[:cut])
            gevent.sleep(0.001)  # so the halves are likely to arrive in separate reads
            writer.write(event[cut:])
        return scheduled, False  # the stream goes on and ends normally

    def _stall_first_token(self, trace: RequestTrace) -> float:
        """Inject `stall_first_token`; returns when the first token is now due."""
        assert self.faults is not None
        self._inject(trace, "stall_first_token")
        due = monotonic() + self.faults.config.stall_s
        sleep_until(due)
        return due

    def _respond_whole(
        self,
        completion: CompletionRequest,
        generation: Generation,
        writer: ResponseWriter,
        fault: str | None,
        trace: RequestTrace,
    ) -> None:
        """Decode every token on schedule, then send one JSON body."""
        engine = generation.engine
        slowdown = generation.seq.slowdown
        scheduled = generation.ready_s
        for _ in range(completion.max_tokens - 1):
            scheduled += engine.tpot_s() * slowdown
            delay = scheduled - monotonic()
            if delay > 0:
                gevent.sleep(delay)
        if fault is not None:
            self._inject(trace, fault)
        if fault == "disconnect":
            writer.abort()
            return
        if fault in ("stall", "stall_first_token") and self.faults is not None:
            gevent.sleep(self.faults.config.stall_s)
        if fault == "never_ending":
            return self._trickle_forever(writer, trace, engine.tpot_s())
        prefix = "chatcmpl-" if completion.endpoint == "chat" else "cmpl-"
        body = completion_body(
            completion,
            prefix + trace.request_id,
            int(time.time()),
            self.served.name,
            trace.cached_tokens,
        )
        status = 200
        if fault == "malformed_chunk":
            body = body[: len(body) // 2]
        elif fault == "error_in_stream":
            status = 500
            body = error_body(500, "simulated error (kvswarm sim fault injection)", "ServerError")
        trace.decode_s = monotonic() - generation.ready_s
        headers = [*self._headers(trace), ("X-Sim-Decode-Ms", f"{trace.decode_s * 1000:.3f}")]
        writer.send(status, body, headers=headers)
        trace.status = status
        if status == 200:
            trace.first_token_s = trace.last_token_s = monotonic()
            trace.output_tokens = completion.max_tokens

    def _trickle_forever(self, writer: ResponseWriter, trace: RequestTrace, gap_s: float) -> None:
        """A JSON body that never ends: whitespace, one byte per token time."""
        writer.start_stream(200, "application/json", self._headers(trace))
        while True:
            gevent.sleep(max(gap_s, 0.001))
            writer.write(b" ")

    def _record(self, trace: RequestTrace) -> None:
        if self.sim_metrics is not None:
            self.sim_metrics.request(trace.endpoint, trace.outcome)
        self._recent[trace.request_id] = {
            "request_id": trace.request_id,
            "queue_ms": trace.queue_s * 1000,
            "prefill_ms": trace.prefill_s * 1000,
            "transfer_ms": trace.transfer_s * 1000,
            "decode_ms": trace.decode_s * 1000,
            "prompt_tokens": trace.prompt_tokens,
            "cached_tokens": trace.cached_tokens,
            "output_tokens": trace.output_tokens,
            "fault": trace.fault,
            "outcome": trace.outcome,
        }
        while len(self._recent) > _RECENT_REQUESTS:
            self._recent.popitem(last=False)
        if self.ground_truth is not None:
            self.ground_truth.write(trace)
