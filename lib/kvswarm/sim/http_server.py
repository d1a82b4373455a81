"""A small HTTP/1.1 server on gevent: httptools parses, the handler writes bytes.

Chosen over gevent.pywsgi by measurement (bench/README.md, "Simulated stack"): at 500
streams and 20,000 chunks/s a raw StreamServer used 13-27% less CPU than pywsgi for the
same send lateness. Keep-alive and pipelined requests are supported; a response is either
whole (`send`) or chunked (`start_stream`, `write`, `end_stream`), as uvicorn sends vLLM's.
Sockets get TCP_NODELAY, so each chunk leaves at once (as uvicorn does).

`HttpServer.refuse_connections(seconds)` closes the listening socket for a while (new
connections are refused) and keeps the open ones; while it is closed, every response
head says `Connection: close` and the connection closes after it, as a server shutting
down gracefully does.
"""

from __future__ import annotations

import contextlib
import errno
import socket as pysocket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from http import HTTPStatus
from time import monotonic

import gevent
import httptools
from gevent import socket
from gevent.server import StreamServer

from kvswarm.errors import KvswarmError
from kvswarm.sim.protocol import error_body

MAX_BODY_BYTES = 64 * 1024 * 1024
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class ClientGone(Exception):
    """The client closed the connection while a response was being written."""


class Request:
    """One parsed request. `received_s` is the monotonic time its first bytes were read;
    `sequence` its place on its connection (1: the connection's first request)."""

    __slots__ = (
        "method", "path", "query", "headers", "body", "received_s", "keep_alive", "sequence",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        received_s: float,
        keep_alive: bool,
        sequence: int = 1,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.received_s = received_s
        self.keep_alive = keep_alive
        self.sequence = sequence


Headers = Iterable[tuple[str, str]]
Handler = Callable[[Request, "ResponseWriter"], None]


class ResponseWriter:
    """Writes one response on a connection; every write returns once the socket took it."""

    __slots__ = ("_sock", "keep_alive", "started", "closed", "_draining")

    def __init__(
        self,
        sock: socket.socket,
        keep_alive: bool,
        draining: Callable[[], bool] | None = None,
    ) -> None:
        """`draining()` True when the head is written makes it the connection's last."""
        self._sock = sock
        self.keep_alive = keep_alive
        self.started = False
        self.closed = False
        self._draining = draining

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Headers = (),
    ) -> None:
        """A whole response with a Content-Length."""
        head = self._head(status, headers, content_type, f"Content-Length: {len(body)}")
        self._sendall(head + body)

    def start_stream(
        self,
        status: int,
        content_type: str,
        headers: Headers = (),
        first_chunk: bytes = b"",
        trailers: Iterable[str] = (),
    ) -> None:
        """Send the head of a chunked response, and its first chunk in the same write."""
        extra = "Transfer-Encoding: chunked"
        trailer_names = ", ".join(trailers)
        if trailer_names:
            extra += f"\r\nTrailer: {trailer_names}"
        head = self._head(status, headers, content_type, extra)
        if first_chunk:
            head += b"%x\r\n%s\r\n" % (len(first_chunk), first_chunk)
        self._sendall(head)

    def write(self, chunk: bytes) -> None:
        """One chunk of a chunked response."""
        self._sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def end_stream(self, last_chunk: bytes = b"", trailers: Headers = ()) -> None:
        """The last chunk (optional), the terminating zero-length chunk and trailers."""
        data = b"%x\r\n%s\r\n" % (len(last_chunk), last_chunk) if last_chunk else b""
        data += b"0\r\n"
        for name, value in trailers:
            data += f"{name}: {value}\r\n".encode("latin-1")
        self._sendall(data + b"\r\n")

    def abort(self) -> None:
        """Close the connection at once, mid-response if one is under way."""
        self.closed = True
        self.keep_alive = False
        with contextlib.suppress(OSError):
            self._sock.shutdown(pysocket.SHUT_RDWR)
        self._sock.close()

    def _head(self, status: int, headers: Headers, content_type: str, extra: str) -> bytes:
        self.started = True
        if self.keep_alive and self._draining is not None and self._draining():
            self.keep_alive = False
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Server: kvswarm-sim",
            f"Content-Type: {content_type}",
            extra,
        ]
        if not self.keep_alive:
            lines.append("Connection: close")
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _sendall(self, data: bytes) -> None:
        if self.closed:
            raise ClientGone
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.closed = True
            raise ClientGone from exc


class _Connection:
    """Reads requests off one socket and hands them to the handler, in order."""

    def __init__(
        self, sock: socket.socket, handler: Handler, draining: Callable[[], bool] | None = None
    ) -> None:
        self._sock = sock
        self._handler = handler
        self._draining = draining
        self._parser = httptools.HttpRequestParser(self)
        self._ready: deque[Request] = deque()
        self._read_s = 0.0
        self._begin_s = 0.0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._requests = 0  # requests parsed on this connection so far

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._begin_s = self._read_s
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue":
            self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY_BYTES:
            raise httptools.HttpParserError("request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        self._requests += 1
        self._ready.append(
            Request(
                method=self._parser.get_method().decode("ascii"),
                path=url.path.decode("latin-1"),
                query=(url.query or b"").decode("latin-1"),
                headers=self._headers,
                body=b"".join(self._body),
                received_s=self._begin_s,
                keep_alive=self._parser.should_keep_alive(),
                sequence=self._requests,
            )
        )

    def serve(self) -> None:
        sock = self._sock
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self._read_s = monotonic()
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                pass
            except httptools.HttpParserError as exc:
                self._reject(str(exc))
                return
            while self._ready:
                if not self._respond(self._ready.popleft()):
                    return

    def _respond(self, request: Request) -> bool:
        """Run the handler; False when the connection must be closed."""
        writer = ResponseWriter(self._sock, request.keep_alive, self._draining)
        try:
            self._handler(request, writer)
        except ClientGone:
            return False
        except Exception:
            traceback.print_exc(file=sys.stderr)
            if not writer.started and not writer.closed:
                writer.keep_alive = False
                with contextlib.suppress(ClientGone):
                    writer.send(500, error_body(500, "internal error", "InternalServerError"))
            return False
        return writer.keep_alive and not writer.closed

    def _reject(self, reason: str) -> None:
        writer = ResponseWriter(self._sock, keep_alive=False)
        body = error_body(400, f"bad HTTP request: {reason}")
        with contextlib.suppress(ClientGone):
            writer.send(400, body)


class HttpServer:
    """Listens on host:port (0 = any free port) and serves `handler` in greenlets."""

    def __init__(self, host: str, port: int, handler: Handler, name: str = "server") -> None:
        self.name = name
        self.host = host
        self._handler = handler
        self._listener = listen(host, port, name)
        self.port: int = self._listener.getsockname()[1]
        self._server = StreamServer(self._listener, self._serve_connection)
        self._refusing_until: float | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def listening(self) -> bool:
        """False while `refuse_connections` has the listening socket closed."""
        return self._refusing_until is None

    def start(self) -> None:
        self._server.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopped = True
        self._server.stop(timeout=timeout)

    def refuse_connections(
        self, seconds: float, on_listening: Callable[[float, float], None] | None = None
    ) -> None:
        """Close the listening socket for `seconds`, then listen on the same port again
        and call `on_listening(from_unix_s, until_unix_s)`: connections attempted between
        those wall-clock times were refused. Open connections are served on (each closes
        after its next response). Called while refusing, it extends the pause."""
        until = monotonic() + seconds
        if self._refusing_until is not None:
            self._refusing_until = max(self._refusing_until, until)
            return
        self._refusing_until = until
        from_unix_s = time.time()
        self._close_listener()
        gevent.spawn(self._listen_again, from_unix_s, on_listening)

    def _close_listener(self) -> None:
        """Hand connections already in the accept queue to handlers (closing the listener
        would reset them, though the kernel had accepted them), then close it."""
        server = self._server
        while True:
            accepted = server.do_read()
            if not accepted:
                break
            server.do_handle(*accepted)
        server.close()

    def _listen_again(
        self, from_unix_s: float, on_listening: Callable[[float, float], None] | None
    ) -> None:
        while not self._stopped:
            assert self._refusing_until is not None
            delay = self._refusing_until - monotonic()
            if delay > 0:
                gevent.sleep(delay)
                continue
            try:
                listener = listen(self.host, self.port, self.name)
            except KvswarmError:
                gevent.sleep(0.01)  # the port is briefly someone's outgoing port
                continue
            until_unix_s = time.time()
            self._listener = listener
            self._server = StreamServer(listener, self._serve_connection)
            self._server.start()
            self._refusing_until = None
            if on_listening is not None:
                on_listening(from_unix_s, until_unix_s)
            return

    def _serve_connection(self, sock: socket.socket, address: object) -> None:
        sock.setsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY, 1)
        try:
            _Connection(sock, self._handler, self._draining).serve()
        finally:
            sock.close()

    def _draining(self) -> bool:
        return self._refusing_until is not None


def listen(host: str, port: int, name: str = "server", backlog: int = 2048) -> socket.socket:
    """A listening gevent socket; a port in use becomes a one-line KvswarmError."""
    family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
    sock = socket.socket(family, pysocket.SOCK_STREAM)
    sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise KvswarmError(
                f"sim {name}: port {port} on {host} is already in use "
                f"(stop what runs there or pick another port)"
            ) from None
        raise KvswarmError(f"sim {name}: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(backlog)
    return sock
