"""A streaming client for OpenAI-compatible completion servers, built for measuring.

One `StreamingClient` per simulated user holds one keep-alive connection. `complete()`
sends a request and returns a `StreamResult` with the timings defined in DESIGN.md:
the request start is stamped just before the request bytes are written; every SSE event
is stamped with the time its last byte was received (the `recv` that completed it), never
when a parser got round to it. HTTP is parsed by httptools (llhttp) and SSE by
`kvswarm.sse` (sseclient-py's events, the per-token ones read directly), both fed the
bytes of each `recv` as they arrive, so no read waits for a buffer to fill.

No Locust here: the client works the same under Locust, in a benchmark or a script.
Under gevent (Locust monkey-patches `socket`) each blocking call yields to other users.

What a correct client must take in its stride is not a failure: a UTF-8 character split
across reads, a stream that ends without `data: [DONE]` after its final chunk, a
`Retry-After` header (the request is not retried: the failure is the measurement). A line
of SSE longer than `MAX_SSE_LINE_BYTES` is `bad_chunk`, so a server that never ends a
line cannot exhaust memory; a response still arriving `timeouts.total_s` after the
request start is `timeout_total`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.socket
import httptools
import orjson

from kvswarm import __version__
from kvswarm.errors import ConfigError
from kvswarm.sse import event_data
from kvswarm.textparts import Buffer, Text, encode_body
from kvswarm.urls import api_url, check_url

_RECV_SIZE = 65536
# The longest SSE line taken (bytes without a line break); longer is `bad_chunk`.
MAX_SSE_LINE_BYTES = 16 * 1024 * 1024
# The most of an error response body kept in a record.
_ERROR_BODY_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: connecting, waiting for the first generated text, mid-stream silence,
    and the whole request (start to end of the response)."""

    connect_s: float = 10.0
    ttft_s: float = 120.0
    idle_s: float = 60.0
    total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What to send. `endpoint` "chat" sends `messages`; "completions" sends `prompt`.
    A text may come in parts (`kvswarm.textparts`): they are sent without being joined."""

    endpoint: str
    model: str
    max_tokens: int
    messages: Sequence[Mapping[str, Text]] = ()
    prompt: Text = ""
    stream: bool = True
    # Further body fields (temperature, ignore_eos, ...), sent as given.
    extra: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""


@dataclass(slots=True)
class StreamResult:
    """What one request measured. Times are seconds on the `time.perf_counter` clock
    (CLOCK_MONOTONIC on Linux), durations relative to `start`."""

    start: float = 0.0
    start_unix_s: float = 0.0
    streamed: bool = True
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    text_chunks: int = 0
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    # vLLM: prompt tokens computed and written to the prefix cache by this request.
    created_cache_tokens: int | None = None
    status_code: int | None = None
    finish_reason: str | None = None
    failure: str = ""
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # The engine's own per-request timings when it sends them (llama.cpp `timings`).
    server_timings: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def output_tokens(self) -> int:
        """usage.completion_tokens when the server reported it, else text-bearing chunks."""
        if self.completion_tokens is not None:
            return self.completion_tokens
        return self.text_chunks

    @property
    def output_tokens_source(self) -> str:
        return "usage" if self.completion_tokens is not None else "chunks"

    @property
    def tpot_s(self) -> float | None:
        """(E2E - TTFT) / (output_tokens - 1), defined for two or more output tokens."""
        tokens = self.output_tokens
        if self.ttft_s is None or self.e2e_s is None or tokens < 2 or not self.streamed:
            return None
        return (self.e2e_s - self.ttft_s) / (tokens - 1)


class RequestFailed(Exception):
    """Internal: ends a request with a failure category."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go, parsed once from a base URL with or without `/v1`
    (`kvswarm.urls` says where the API lives)."""

    scheme: str
    host: str
    port: int
    path_prefix: str

    @classmethod
    def parse(cls, base_url: str) -> Target:
        try:
            check_url(base_url)
        except ValueError as exc:
            raise ConfigError(
                f"target URL: {exc}; expected http://host[:port][/v1] or https://..."
            ) from None
        parts = urlsplit(api_url(base_url, ""))
        assert parts.hostname is not None  # check_url saw a host
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def path(self, endpoint: str) -> str:
        return (
            f"{self.path_prefix}/chat/completions"
            if endpoint == "chat"
            else (f"{self.path_prefix}/completions")
        )


def api_key_from_environment() -> str | None:
    """KVSWARM_API_KEY, else OPENAI_API_KEY, else None."""
    return os.environ.get("KVSWARM_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def connect_tcp(address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection with Nagle off, so small request writes are not delayed.

    An IP address is connected to directly: no getaddrinfo (which gevent runs in its
    thread pool) for a host that needs no lookup. A name is looked up per connection,
    so a changed DNS entry is followed; with keep-alive that is once per user."""
    sock = _connect_to_address(address, timeout) or socket.create_connection(
        address, timeout=timeout
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect_to_address(address: tuple[str, int], timeout: float) -> socket.socket | None:
    """Connected to an IP address; None when `address` holds a name."""
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return None
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


class _Response:
    """httptools callbacks: collects the status, headers and body pieces as they parse."""

    __slots__ = ("headers", "body", "headers_done", "complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Read now: once the message is complete, llhttp has reset its flags for the next
        # one and `should_keep_alive()` says False whatever the response said.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _StaleConnection(Exception):
    """A reused keep-alive connection closed before answering: retry on a new one."""


class _Expired(Exception):
    """Thrown by the watchdog into a request waiting past its limit."""

    def __init__(self, category: str) -> None:
        super().__init__(category)
        self.category = category


class _Watchdog:
    """A request's timeouts under gevent: one timer, checked lazily.

    A socket timeout costs gevent a new `Timeout` (a timer started and closed) on every
    `recv` that waits: at a token every few milliseconds per stream, that was a fifth of
    the client's CPU. Here the socket waits without a timeout, and one timer fires when
    the earliest limit could have passed; if the stream has moved on since (a token
    arrived, pushing the idle limit back), it is set again for the new limit, otherwise
    the limit's category is thrown into the waiting request. At a token every 10 ms and
    a 60-s idle limit, that is one timer per minute instead of one per token. A limit
    that moves earlier (the first token starts the idle limit, which may end before the
    TTFT limit would have) is told with `limit_changed`.
    """

    __slots__ = ("_limit", "_loop", "_timer", "_at", "_greenlet")

    def __init__(self, limit: Callable[[], tuple[float, str]]) -> None:
        """`limit()` says when the current wait expires (perf_counter) and as what."""
        self._limit = limit
        self._loop = gevent.get_hub().loop
        self._timer: Any = None
        self._at = 0.0
        self._greenlet: Any = None

    def arm(self) -> None:
        """Watch the calling greenlet's request from now until `disarm`."""
        self._greenlet = gevent.getcurrent()
        self._set(self._limit()[0])

    def limit_changed(self) -> None:
        """The wait's limit may have moved earlier than the timer."""
        at = self._limit()[0]
        if self._greenlet is not None and at < self._at:
            self._set(at)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._greenlet = None

    def _set(self, at: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._at = at
        self._timer = self._loop.timer(max(0.0, at - time.perf_counter()))
        self._timer.start(self._check)

    def _check(self) -> None:
        at, category = self._limit()
        if time.perf_counter() < at:
            self._set(at)
            return
        greenlet = self._greenlet
        self.disarm()
        if greenlet is not None:
            greenlet.throw(_Expired(category))


class StreamingClient:
    """Sends completion requests over one keep-alive HTTP/1.1 connection.

    Not shared between greenlets: give each simulated user its own client.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts = Timeouts(),
        connector: Callable[..., socket.socket] = connect_tcp,
    ) -> None:
        """`connector(address, timeout=...)` opens the connection; tests pass a fake."""
        self.target = Target.parse(base_url)
        self.timeouts = timeouts
        self._connector = connector
        self._api_key = api_key
        self._sock: socket.socket | None = None
        # Under gevent the request's timeouts are watched by a timer, not the socket.
        self._watchdog: _Watchdog | None = None
        # Under gevent, a plain (not TLS) socket's readiness watcher, and whether the last
        # recv drained the socket: see `_recv`.
        self._readable: Any = None
        self._drained = False
        self._reused = False
        # Whether the last request's bytes were handed to the socket (it may have been
        # seen by the server), as opposed to interrupted before that.
        self.request_sent = False
        # Per-request parse state, reset by complete().
        self._parser: httptools.HttpResponseParser | None = None
        self._response = _Response()
        self._recv_t = 0.0
        # Until the first generated text: the wait's limit (perf_counter) and its
        # category; after it, timeouts.idle_s from the last recv. Always `_end_by`.
        self._deadline = 0.0
        self._deadline_category = "timeout_ttft"
        self._end_by = 0.0
        self._got_text = False
        self._result = StreamResult()

    def close(self) -> None:
        if self._readable is not None:
            self._readable.close()
            self._readable = None
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def complete(self, request: CompletionRequest) -> StreamResult:
        """Send `request` and measure its response. Never raises for server or network
        failures: the result's `failure` says which category, `error` what happened.
        Cancellation (GreenletExit, KeyboardInterrupt) propagates after closing."""
        self.request_sent = False
        head, content = self._encode(request)
        try:
            try:
                return self._attempt(request, head, content)
            except _StaleConnection:
                self.close()
                return self._attempt(request, head, content)
        except BaseException:
            self.close()
            raise

    def _encode(self, request: CompletionRequest) -> tuple[bytes, Sequence[Buffer]]:
        """The request's HTTP head and its JSON body (in buffers, see `encode_body`)."""
        body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens}
        if request.endpoint == "chat":
            body["messages"] = list(request.messages)
        else:
            body["prompt"] = request.prompt
        body["stream"] = request.stream
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        body.update(request.extra)
        content = encode_body(body)
        lines = [
            f"POST {self.target.path(request.endpoint)} HTTP/1.1",
            f"Host: {self.target.host_header}",
            f"User-Agent: kvswarm/{__version__}",
            "Content-Type: application/json",
            f"Accept: {'text/event-stream' if request.stream else 'application/json'}",
            f"Content-Length: {sum(map(len, content))}",
        ]
        if request.request_id:
            lines.append(f"X-Request-Id: {request.request_id}")
        if self._api_key:
            lines.append(f"Authorization: Bearer {self._api_key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), content

    def _attempt(
        self, request: CompletionRequest, head: bytes, content: Sequence[Buffer]
    ) -> StreamResult:
        result = self._result = StreamResult(streamed=request.stream)
        self._response = response = _Response()
        self._parser = response.parser = httptools.HttpResponseParser(response)
        self._got_text = False
        # The attempt's wall-clock time, even if it never gets to send (a connect failure).
        result.start_unix_s = time.time()
        try:
            self._ensure_connected(result)
            result.start_unix_s = time.time()
            result.start = time.perf_counter()
            self._deadline = result.start + self.timeouts.ttft_s
            self._deadline_category = "timeout_ttft"
            self._end_by = result.start + self.timeouts.total_s
            self._send(head, content)
            self._read_response(request, result)
            if not response.complete or not response.keep_alive:
                self.close()
        except RequestFailed as failure:
            result.failure = failure.category
            result.error = str(failure)
            if result.e2e_s is None:
                result.e2e_s = time.perf_counter() - result.start if result.start else None
            self.close()
        return result

    def _read_response(self, request: CompletionRequest, result: StreamResult) -> None:
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.arm()
        try:
            self._read_headers(result)
            if result.status_code != 200:
                self._fail_http(result)
            elif request.stream:
                self._check_event_stream(result)
                self._read_stream(result)
            else:
                self._read_whole(result)
        finally:
            if watchdog is not None:
                watchdog.disarm()

    def _limit(self) -> tuple[float, str]:
        """When the current wait for data expires (perf_counter), and as which category."""
        if self._got_text:
            at, category = self._recv_t + self.timeouts.idle_s, "timeout_idle"
        else:
            at, category = self._deadline, self._deadline_category
        if self._end_by <= at:
            return self._end_by, "timeout_total"
        return at, category

    def _timed_out(self, category: str) -> RequestFailed:
        timeouts = self.timeouts
        if category == "timeout_ttft":
            message = f"no generated text {timeouts.ttft_s:g} s after the request start"
        elif category == "timeout_idle":
            message = f"no data for {timeouts.idle_s:g} s"
        else:
            message = f"the response was not over {timeouts.total_s:g} s after the request start"
        return RequestFailed(category, f"{message} ({category})")

    def _ensure_connected(self, result: StreamResult) -> None:
        if self._sock is not None:
            if _still_open(self._sock):
                self._reused = True
                return
            self.close()  # the server closed it while idle: connect again
        self._reused = False
        target = self.target
        try:
            sock = self._connector((target.host, target.port), timeout=self.timeouts.connect_s)
            if target.scheme == "https":
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=target.host)
        except OSError as exc:
            raise RequestFailed(
                "connect", f"cannot connect to {target.host}:{target.port}: {_describe(exc)}"
            ) from None
        self._sock = sock
        cooperative = _is_gevent_socket(sock)
        self._watchdog = _Watchdog(self._limit) if cooperative else None
        if cooperative and not isinstance(sock, ssl.SSLSocket):
            self._readable = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._drained = False

    def _send(self, head: bytes, content: Sequence[Buffer]) -> None:
        sock = self._sock
        assert sock is not None
        try:
            sock.settimeout(self.timeouts.connect_s)
            self.request_sent = True
            if sum(map(len, content)) < _GATHER_FROM_BYTES or not _can_gather(sock):
                sock.sendall(b"".join((head, *content)))
            else:
                _send_gathered(sock, (head, *content))
            if self._watchdog is not None:
                sock.settimeout(None)
        except OSError as exc:
            if self._reused:
                raise _StaleConnection() from None
            raise RequestFailed(
                "connect", f"sending the request failed: {_describe(exc)}"
            ) from None

    def _recv(self) -> bytes:
        """One recv within the current limit (`_limit`); its bytes go to the HTTP parser.
        Stamps `_recv_t`."""
        sock = self._sock
        assert sock is not None and self._parser is not None
        category = ""
        try:
            if self._watchdog is None:
                # No gevent: the socket's own timeout, set for this wait.
                at, category = self._limit()
                left = at - time.perf_counter()
                if left <= 0:
                    raise self._timed_out(category)
                sock.settimeout(left)
            elif self._drained and self._readable is not None:
                # The last recv emptied the socket, so the next token is not there yet:
                # wait for it first. Trying first (gevent's recv does) costs a failed
                # recv and its exception per token, ~7% of the client's CPU per token.
                # (Not under TLS: decrypted bytes can wait in the SSL object with none
                # on the socket.)
                gevent.socket.wait(self._readable)
            data = sock.recv(_RECV_SIZE)
            self._drained = len(data) < _RECV_SIZE
        except _Expired as expired:
            raise self._timed_out(expired.category) from None
        except TimeoutError:
            raise self._timed_out(category) from None
        except OSError as exc:
            raise RequestFailed("disconnect", f"connection failed: {_describe(exc)}") from None
        self._recv_t = now = time.perf_counter()
        if now >= self._end_by:
            # A stream that never stops sending never waits long enough for a timer.
            raise self._timed_out("timeout_total")
        if not data:
            return data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise RequestFailed("bad_chunk", f"invalid HTTP response: {exc}") from None
        return data

    def _read_headers(self, result: StreamResult) -> None:
        # A reused connection that ends before the first response byte was, as far as a
        # client can tell, closed by the server while idle: the check before sending
        # races with a close that is on its way (llama.cpp's server closes a quarter of
        # its keep-alive connections right after a streamed response, measured). It is
        # retried once on a new connection, as browsers do; a server that read the
        # request and dropped it then sees it twice (the simulator's
        # `disconnect_before_head` fault strikes first requests of connections only).
        response = self._response
        received_any = False
        while not response.headers_done:
            try:
                data = self._recv()
            except RequestFailed as failure:
                if failure.category == "disconnect" and self._reused and not received_any:
                    raise _StaleConnection() from None
                raise
            if not data:
                if self._reused and not received_any:
                    raise _StaleConnection()
                raise RequestFailed("disconnect", "connection closed before the response headers")
            received_any = True
        assert self._parser is not None
        result.status_code = self._parser.get_status_code()
        result.headers = response.headers

    def _read_body(self) -> bytes:
        """The rest of a non-streamed body, within the current limit."""
        response = self._response
        while not response.complete:
            data = self._recv()
            if not data:
                if self._ends_at_eof():
                    break
                raise RequestFailed("disconnect", "connection closed mid-response")
        body = b"".join(response.body)
        response.body.clear()
        return body

    def _ends_at_eof(self) -> bool:
        """True when the body has neither a length nor chunked encoding (ends at close)."""
        headers = self._response.headers
        return "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )

    def _fail_http(self, result: StreamResult) -> None:
        self._read_within_idle()
        try:
            body = self._read_body()
        except RequestFailed:
            body = b""
        result.e2e_s = time.perf_counter() - result.start
        message = _error_message(body) or f"HTTP {result.status_code}"
        retry_after = result.headers.get("retry-after")
        if retry_after is not None:
            message += f" (Retry-After: {retry_after[:40]})"
        raise RequestFailed(f"http_{result.status_code}", message)

    def _check_event_stream(self, result: StreamResult) -> None:
        """A streamed 200 must be SSE: an HTML page (a gateway's or a portal's) is not."""
        content_type = result.headers.get("content-type")
        if content_type is None or content_type.lower().startswith("text/event-stream"):
            return
        self._read_within_idle()
        try:
            body = self._read_body()[:_ERROR_BODY_LIMIT]
        except RequestFailed:
            body = b""
        result.e2e_s = time.perf_counter() - result.start
        snippet = " ".join(body.decode("utf-8", "replace").split())[:120]
        raise RequestFailed(
            "bad_chunk", f"expected text/event-stream, got {content_type[:60]}: {snippet}"
        )

    def _read_within_idle(self) -> None:
        """What follows an error's headers is read within timeouts.idle_s from now."""
        self._deadline = time.perf_counter() + self.timeouts.idle_s
        self._deadline_category = "timeout_idle"
        self._limit_changed()

    def _limit_changed(self) -> None:
        if self._watchdog is not None:
            self._watchdog.limit_changed()

    def _read_whole(self, result: StreamResult) -> None:
        body = self._read_body()
        result.e2e_s = self._recv_t - result.start
        result.ttft_s = result.e2e_s
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestFailed("bad_chunk", f"response is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RequestFailed("bad_chunk", "response is not a JSON object")
        self._check_error(data)
        choices = data.get("choices") or []
        text = ""
        if choices:
            choice = choices[0]
            message = choice.get("message")
            text = (_message_text(message) if message else choice.get("text")) or ""
            result.finish_reason = choice.get("finish_reason")
        result.text = text
        result.text_chunks = 1 if text else 0
        self._take_usage(result, data)
        if not text and not result.completion_tokens:
            raise RequestFailed("empty", "the response carried no generated text")

    def _body_pieces(self) -> Iterator[bytes]:
        """Body bytes as each recv delivers them; the SSE reader pulls from here.

        Pieces without a line break are held and given with the one that ends their line:
        the SSE readers copy their buffer per piece, which would make a long line cost its
        length squared; held bytes beyond MAX_SSE_LINE_BYTES are `bad_chunk`."""
        response = self._response
        held: list[bytes] = []
        held_bytes = 0
        while True:
            if response.body:
                pieces = response.body
                response.body = []
                for piece in pieces:
                    if b"\n" in piece or b"\r" in piece:
                        if held:
                            held.append(piece)
                            piece = b"".join(held)
                            held, held_bytes = [], 0
                        yield piece
                        continue
                    held.append(piece)
                    held_bytes += len(piece)
                    if held_bytes > MAX_SSE_LINE_BYTES:
                        raise RequestFailed(
                            "bad_chunk",
                            f"an SSE line longer than {MAX_SSE_LINE_BYTES} bytes",
                        )
            if response.complete:
                if held:
                    yield b"".join(held)
                return
            data = self._recv()
            if not data:
                if response.body:
                    continue
                if self._ends_at_eof():
                    if held:
                        yield b"".join(held)
                    return
                raise RequestFailed("disconnect", "connection closed mid-stream")

    def _read_stream(self, result: StreamResult) -> None:
        try:
            self._parse_events(result)
        except RequestFailed:
            if result.e2e_s is None:
                raise
            # [DONE] had arrived: what failed after it was only the end of the HTTP
            # message, and the connection is closed rather than reused.
            self._response.complete = False
        if result.e2e_s is None:
            # The stream ended without [DONE]: complete if its final chunk (the one with a
            # finish reason) had come, and then it ended when its last byte arrived.
            result.e2e_s = self._recv_t - result.start
            if result.finish_reason is None:
                raise RequestFailed(
                    "disconnect", "the stream ended without its final chunk or data: [DONE]"
                )
        if not self._got_text:
            raise RequestFailed("empty", "the stream carried no generated text")

    def _parse_events(self, result: StreamResult) -> None:
        done = False
        last_text_t = 0.0
        pieces: list[str] = []
        itl = result.itl_s
        start = result.start
        try:
            for data in event_data(self._body_pieces()):
                if done:
                    continue
                if data == b"[DONE]":
                    done = True
                    result.e2e_s = self._recv_t - start
                    continue
                chunk = orjson.loads(data)
                if not isinstance(chunk, dict):
                    snippet = data[:80].decode(errors="replace")
                    raise RequestFailed("bad_chunk", f"SSE data is not a JSON object: {snippet}")
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta")
                    if delta is not None:
                        text = (
                            delta.get("content")
                            or delta.get("reasoning_content")
                            or delta.get("reasoning")
                        )
                    else:
                        text = choice.get("text")
                    if text:
                        now = self._recv_t
                        if self._got_text:
                            itl.append(now - last_text_t)
                        else:
                            self._got_text = True
                            result.ttft_s = now - start
                            self._limit_changed()
                        last_text_t = now
                        pieces.append(text)
                    reason = choice.get("finish_reason")
                    if reason:
                        result.finish_reason = reason
                if "usage" in chunk or "timings" in chunk:
                    self._take_usage(result, chunk)
                if "error" in chunk or chunk.get("object") == "error":
                    self._check_error(chunk)
        except orjson.JSONDecodeError as exc:
            raise RequestFailed("bad_chunk", f"SSE data is not JSON: {exc}") from None
        except UnicodeDecodeError:
            raise RequestFailed("bad_chunk", "SSE data is not valid UTF-8") from None
        finally:
            result.text_chunks = len(pieces)
            result.text = "".join(pieces)

    def _take_usage(self, result: StreamResult, chunk: Mapping[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage:
            result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
            result.completion_tokens = usage.get("completion_tokens", result.completion_tokens)
            details = usage.get("prompt_tokens_details")
            if details:
                if details.get("cached_tokens") is not None:
                    result.cached_tokens = details["cached_tokens"]
                if details.get("created_cache_tokens") is not None:
                    result.created_cache_tokens = details["created_cache_tokens"]
        timings = chunk.get("timings")
        if timings:
            result.server_timings = timings

    @staticmethod
    def _check_error(chunk: Mapping[str, Any]) -> None:
        error = chunk.get("error")
        if error is None and chunk.get("object") == "error":
            error = chunk
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise RequestFailed("server_error", f"server error in stream: {message}")


def _is_gevent_socket(sock: object) -> bool:
    """A cooperative socket (Locust's processes, monkey-patched): its waits can be
    interrupted by a timer."""
    return isinstance(sock, gevent.socket.socket)


# A body at least this long goes out as its buffers (`sendmsg`), not joined: a long context
# is 100-200 kB, and joining copies all of it once more per request.
_GATHER_FROM_BYTES = 16 * 1024


def _can_gather(sock: socket.socket) -> bool:
    """Whether `sock` can send from several buffers at once (not under TLS)."""
    return hasattr(sock, "sendmsg") and not isinstance(sock, ssl.SSLSocket)


def _send_gathered(sock: socket.socket, buffers: Sequence[Buffer]) -> None:
    """Send `buffers` in order, in one system call where the socket takes them whole;
    what it did not take goes after, as `sendall` would send it."""
    sent = sock.sendmsg(buffers)
    for buffer in buffers:
        if sent >= len(buffer):
            sent -= len(buffer)
            continue
        sock.sendall(memoryview(buffer)[sent:])
        sent = 0


def _still_open(sock: socket.socket) -> bool:
    """Whether an idle keep-alive connection can take a request: nothing to read on it
    (a server that closed it has sent EOF; unasked-for bytes make it unusable too)."""
    try:
        sock.settimeout(0.0)  # the request's own timeouts are set when it is sent
        sock.recv(1)
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False
    return False


def _message_text(message: Mapping[str, Any]) -> str:
    return (
        message.get("content") or message.get("reasoning_content") or message.get("reasoning") or ""
    )


def _error_message(body: bytes) -> str:
    """A short message from an HTTP error body (OpenAI/vLLM error JSON, or text)."""
    if not body:
        return ""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:_ERROR_BODY_LIMIT]
        if isinstance(error, str):
            return error[:_ERROR_BODY_LIMIT]
    return body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")


def _describe(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__
