"""The client on real sockets under gevent: its timeouts, where one lazy timer per request
watches them (a socket timeout would cost a timer per token), and its reads.

Each test serves one scripted response from a gevent server in this process: what it
writes, with pauses between, then silence (until the client hangs up) or more of the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import gevent
import gevent.monkey
import gevent.socket
import orjson
import pytest
from gevent.server import StreamServer

import kvswarm.client
from kvswarm.client import CompletionRequest, StreamingClient, Timeouts
from kvswarm.textparts import JoinedText, SharedText, Text

REQUEST = CompletionRequest(endpoint="chat", model="m", max_tokens=64, messages=[])
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def event(obj: object) -> bytes:
    data = b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def token(text: str, finish: str | None = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


END = event(b"[DONE]") + b"0\r\n\r\n"


def read_request(sock) -> bytes:
    """Read one request; its body."""
    return read_head_and_body(sock)[1]


def read_head_and_body(sock) -> tuple[bytes, bytes]:
    """Read one request: its head and its body. ConnectionError when the client closes
    the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _more(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += _more(sock)
    return head, body


def _more(sock) -> bytes:
    if not (data := sock.recv(65536)):
        raise ConnectionError("the client closed the connection")
    return data


# Every request body the test servers read, in order.
received: list[bytes] = []


def serve(script):
    """A server on a free port answering every request with `script(sock)`."""

    def handle(sock, _address) -> None:
        try:
            received.append(read_request(sock))
            script(sock)
        except OSError:
            pass

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


@pytest.fixture
def server_for() -> Iterator:
    servers: list[StreamServer] = []

    def start(script) -> str:
        server = serve(script)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.stop(timeout=1)


def client(url: str, **limits: float) -> StreamingClient:
    return StreamingClient(url, timeouts=Timeouts(**{"connect_s": 2, **limits}))


def test_silence_before_the_first_token_is_timeout_ttft(server_for) -> None:
    url = server_for(lambda sock: (sock.sendall(HEAD), sock.recv(1)))
    started = time.perf_counter()
    result = client(url, ttft_s=0.3, idle_s=5, total_s=10).complete(REQUEST)
    assert result.failure == "timeout_ttft"
    assert "0.3 s after the request start" in result.error
    assert time.perf_counter() - started >= 0.3


def test_silence_after_the_first_token_is_timeout_idle(server_for) -> None:
    url = server_for(lambda sock: (sock.sendall(HEAD + token("a")), sock.recv(1)))
    result = client(url, ttft_s=30, idle_s=0.3, total_s=60).complete(REQUEST)
    assert result.failure == "timeout_idle"
    assert result.ttft_s is not None and result.e2e_s >= result.ttft_s + 0.3
    assert result.e2e_s < 30  # the idle limit ended it, not the TTFT limit it replaced


def test_an_error_body_that_never_comes_is_given_up_after_the_idle_limit(server_for) -> None:
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n{"
    url = server_for(lambda sock: (sock.sendall(head), sock.recv(1)))
    result = client(url, ttft_s=30, idle_s=0.3, total_s=60).complete(REQUEST)
    assert result.failure == "http_500"
    assert 0.3 <= result.e2e_s < 30


def steady(tokens: int, gap_s: float):
    def script(sock) -> None:
        sock.sendall(HEAD)
        for i in range(tokens):
            gevent.sleep(gap_s)
            sock.sendall(token(f"t{i}", "length" if i == tokens - 1 else None))
        sock.sendall(END)

    return script


def test_a_stream_longer_than_the_idle_limit_is_not_cut_while_tokens_keep_coming(
    server_for,
) -> None:
    url = server_for(steady(tokens=30, gap_s=0.02))
    result = client(url, ttft_s=5, idle_s=0.1, total_s=10).complete(REQUEST)
    assert result.ok, result.error
    assert result.text_chunks == 30 and result.e2e_s > 0.5


def test_a_stream_still_sending_at_the_total_limit_is_timeout_total(server_for) -> None:
    url = server_for(steady(tokens=1000, gap_s=0.01))
    result = client(url, ttft_s=5, idle_s=5, total_s=0.4).complete(REQUEST)
    assert result.failure == "timeout_total"
    assert result.text_chunks > 5


def test_one_timer_watches_a_request_not_one_per_token(server_for, monkeypatch) -> None:
    timers: list[float] = []
    original = kvswarm.client._Watchdog._set
    monkeypatch.setattr(
        kvswarm.client._Watchdog, "_set", lambda self, at: (timers.append(at), original(self, at))
    )
    url = server_for(steady(tokens=40, gap_s=0.002))
    streaming = client(url, ttft_s=30, idle_s=30, total_s=60)
    for _ in range(3):
        assert streaming.complete(REQUEST).ok
    assert len(timers) == 3


def test_the_request_is_unwatched_after_it_ends(server_for) -> None:
    """No timer left behind to throw into the user's greenlet later."""
    url = server_for(steady(tokens=3, gap_s=0.001))
    streaming = client(url, ttft_s=0.2, idle_s=0.2, total_s=0.3)
    assert streaming.complete(REQUEST).ok
    gevent.sleep(0.5)  # past every limit of the request that ended
    assert streaming.complete(REQUEST).ok


class EmptyReadCounter(gevent.socket.socket):
    """A cooperative socket that counts the blocking recvs made when it had nothing to
    read (each one a failed read and an exception inside gevent before its wait)."""

    empty_reads = 0
    _select = staticmethod(gevent.monkey.get_original("select", "select"))

    def recv(self, *args):
        if self.gettimeout() != 0.0 and not self._select([self.fileno()], [], [], 0)[0]:
            self.empty_reads += 1
        return super().recv(*args)


def test_a_stream_waits_for_its_tokens_before_reading_them(server_for) -> None:
    """After a read that emptied the socket the next token is not there yet: the client
    waits for it rather than trying a read that fails. Only a connection's first read
    tries first (the test server answers one request per connection)."""
    sockets: list[EmptyReadCounter] = []

    def connect(address: tuple[str, int], timeout: float) -> EmptyReadCounter:
        sock = EmptyReadCounter()
        sock.settimeout(timeout)
        sock.connect(address)
        sockets.append(sock)
        return sock

    url = server_for(steady(tokens=20, gap_s=0.003))
    streaming = StreamingClient(url, timeouts=Timeouts(connect_s=2), connector=connect)
    for _ in range(3):
        result = streaming.complete(REQUEST)
        assert result.ok and result.text_chunks == 20, result.error
    assert [sock.empty_reads for sock in sockets] == [1] * len(sockets)


class PartialSender(gevent.socket.socket):
    """A cooperative socket whose gathered sends take at most `cap` bytes, as a full send
    buffer does; records how many it took."""

    cap: int
    gathered: list[int]

    def sendmsg(self, buffers, *args):
        taken = super().send(b"".join(buffers)[: self.cap])
        self.gathered.append(taken)
        return taken


@pytest.mark.parametrize(
    ("prompt_chars", "cap"),
    [(500, 1000), (40_000, 1000), (200_000, 1000), (200_000, 50)],  # 50: inside the head
)
def test_a_request_body_arrives_whole_however_the_socket_takes_it(
    server_for, prompt_chars: int, cap: int
) -> None:
    """A long body goes out beside its head, not joined to it; whatever part of them one
    send takes, the rest follows."""
    sock = PartialSender()
    sock.cap, sock.gathered = cap, []
    prompt = "word " * (prompt_chars // 5)
    body = _sent_through(server_for, sock, prompt)
    assert orjson.loads(body)["messages"] == [{"role": "user", "content": prompt}]
    # Short bodies are joined to their head and sent whole; long ones are gathered.
    assert sock.gathered == ([] if prompt_chars < 16_000 else [cap])


class SplitSender(PartialSender):
    """A PartialSender whose one send ends in the middle of buffer number `where`."""

    where: int

    def sendmsg(self, buffers, *args):
        self.cap = sum(map(len, buffers[: self.where])) + len(buffers[self.where]) // 2
        return super().sendmsg(buffers, *args)


# The buffers of the request below: its head, the JSON up to the text, the opening quote,
# "tag", the document, the question, the closing quote, the rest of the JSON.
@pytest.mark.parametrize("where", [0, 4, 5], ids=["head", "document", "question"])
def test_a_prompt_in_parts_arrives_as_the_json_of_the_whole_text(server_for, where: int) -> None:
    """A long document shared by requests goes out as its own buffer between the JSON
    before it and the question after it; however much of them one send takes, the server
    reads the body of the joined text."""
    sock = SplitSender()
    sock.where, sock.gathered = where, []
    document = SharedText('a "quoted" line\n' * 10_000)  # 190 kB of JSON, escapes and all
    prompt = JoinedText(("tag\n\n", document, "\n\nWhat does it say?"))
    body = _sent_through(server_for, sock, prompt)
    assert body == orjson.dumps(
        {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": str(prompt)}]}
        | {"stream": True, "stream_options": {"include_usage": True}}
    )
    assert sock.gathered == [sock.cap]


def _sent_through(server_for, sock: PartialSender, prompt: Text) -> bytes:
    """The body a server received for a chat request of `prompt` sent over `sock` (its
    one connection: a second would fail)."""

    def connect(address: tuple[str, int], timeout: float) -> PartialSender:
        sock.settimeout(timeout)
        sock.connect(address)
        return sock

    request = CompletionRequest(
        endpoint="chat", model="m", max_tokens=4, messages=[{"role": "user", "content": prompt}]
    )
    received.clear()
    url = server_for(lambda sock: sock.sendall(HEAD + token("ok", "stop") + END))
    # A body cut short would leave the server waiting: the TTFT limit ends that.
    limits = Timeouts(connect_s=2, ttft_s=5)
    result = StreamingClient(url, timeouts=limits, connector=connect).complete(request)
    assert result.ok, result.error
    (body,) = received
    return body
