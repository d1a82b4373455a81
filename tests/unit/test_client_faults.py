"""The streaming client against the faults a misbehaving server or gateway produces:
which failure category each lands in, and which are no failure for a correct client."""

from __future__ import annotations

import json
import time

import pytest

import kvswarm.client
from kvswarm.client import CompletionRequest, StreamingClient, Timeouts
from tests.unit.test_client_stream import (
    USAGE,
    VLLM_CHAT,
    FakeSocket,
    chat_chunk,
    chunked_response,
    run,
    sse,
)

REQUEST = CompletionRequest(endpoint="chat", model="m", max_tokens=3)


class ScriptedSocket:
    """A keep-alive connection: each request sent makes the next reply readable; a reply
    of None closes the connection instead of answering. Nothing to read with timeout 0
    raises BlockingIOError, as a real non-blocking socket does."""

    def __init__(self, replies: list[bytes | None]) -> None:
        self.replies = list(replies)
        self.readable = b""
        self.eof = False
        self.timeout: float | None = None
        self.requests = 0
        self.closed = False

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes) -> None:
        self.requests += 1
        reply = self.replies.pop(0)
        if reply is None:
            self.eof = True
        else:
            self.readable += reply

    def recv(self, size: int) -> bytes:
        if self.readable:
            piece, self.readable = self.readable[:size], self.readable[size:]
            return piece
        if self.eof:
            return b""
        if self.timeout == 0.0:
            raise BlockingIOError
        raise TimeoutError("timed out")

    def close(self) -> None:
        self.closed = True


def html_response(status: str = "200 OK") -> bytes:
    body = b"<html><body><h1>Bad Gateway</h1></body></html>"
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_html_page_with_status_200_instead_of_a_stream_is_bad_chunk() -> None:
    result, _ = run([html_response()])
    assert result.failure == "bad_chunk"
    assert "expected text/event-stream, got text/html" in result.error
    assert "Bad Gateway" in result.error


def test_event_stream_with_a_charset_is_read() -> None:
    response = VLLM_CHAT.replace(
        b"Content-Type: text/event-stream", b"Content-Type: text/event-stream; charset=utf-8"
    )
    assert run([response])[0].ok


@pytest.mark.parametrize("status", ["429 Too Many Requests", "503 Service Unavailable"])
def test_429_and_503_are_their_own_categories_and_keep_retry_after(status: str) -> None:
    body = b'{"error": {"message": "slow down", "code": 429}}'
    response = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    result, _ = run([response])
    assert result.failure == f"http_{status[:3]}"
    assert result.error == "slow down (Retry-After: 2)"


def test_utf8_character_split_across_chunks_and_reads_is_no_failure() -> None:
    final = json.dumps(chat_chunk("café ☕ 日本", finish="length"), ensure_ascii=False)
    body = sse(final, USAGE, "[DONE]")
    cup = body.index("☕".encode())
    for cut in range(cup + 1, cup + 3):
        # One HTTP chunk ends inside the character, and so does one recv.
        head, tail = chunked_response(body[:cut])[:-5], chunked_response(body[cut:])
        tail = tail[tail.index(b"\r\n\r\n") + 4 :]
        result, _ = run([head, tail])
        assert result.ok, result.error
        assert result.text == "café ☕ 日本"


def test_stream_ending_without_done_after_its_final_chunk_is_complete() -> None:
    body = sse(chat_chunk("a"), chat_chunk("b", finish="length"), USAGE)
    result, _ = run([chunked_response(body)])
    assert result.ok, result.error


def test_stream_ending_cleanly_before_its_final_chunk_is_disconnect() -> None:
    body = sse(chat_chunk("a"), chat_chunk("b"))
    result, _ = run([chunked_response(body)])
    assert result.failure == "disconnect"
    assert "without its final chunk" in result.error


def test_huge_event_within_the_line_limit_is_no_failure() -> None:
    text = "x" * (3 * 1024 * 1024)
    body = sse(chat_chunk(text), chat_chunk("b", finish="length"), USAGE, "[DONE]")
    result, _ = run([chunked_response(body, chunk_size=65536)])
    assert result.ok, result.error
    assert result.text == text + "b"


def test_line_longer_than_the_limit_is_bad_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvswarm.client, "MAX_SSE_LINE_BYTES", 100_000)
    body = sse(chat_chunk("a"), chat_chunk("x" * 200_000), "[DONE]")
    result, _ = run([chunked_response(body, chunk_size=4096)])
    assert result.failure == "bad_chunk"
    assert "longer than 100000 bytes" in result.error


class EndlessSocket(FakeSocket):
    """A stream that never ends: one more text chunk on every read, a millisecond apart."""

    def recv(self, size: int) -> bytes:
        if self.pieces:
            return super().recv(size)
        time.sleep(0.001)
        data = sse(chat_chunk("more"))
        return b"%x\r\n%s\r\n" % (len(data), data)


def test_stream_that_never_ends_is_timeout_total() -> None:
    head = chunked_response(sse(chat_chunk("a")))[: -len(b"0\r\n\r\n")]
    fake = EndlessSocket([head])
    client = StreamingClient(
        "http://server:8000",
        timeouts=Timeouts(connect_s=1, ttft_s=1, idle_s=1, total_s=0.2),
        connector=lambda address, timeout: fake,
    )
    result = client.complete(REQUEST)
    assert result.failure == "timeout_total"
    assert result.ttft_s is not None


def test_reused_connection_closed_before_a_response_byte_is_retried_once_on_a_new_one() -> None:
    """What a server closing an idle keep-alive connection looks like, when its close
    crosses the request (llama.cpp does it after a quarter of its streamed responses)."""
    sockets = [ScriptedSocket([VLLM_CHAT, None]), ScriptedSocket([VLLM_CHAT])]
    client = StreamingClient("http://server:8000", connector=lambda a, timeout: sockets.pop(0))
    assert client.complete(REQUEST).ok
    result = client.complete(REQUEST)
    assert result.ok and sockets == []


def test_a_new_connection_closed_before_a_response_byte_is_disconnect_not_retried() -> None:
    sockets = [ScriptedSocket([None]), ScriptedSocket([VLLM_CHAT])]
    client = StreamingClient("http://server:8000", connector=lambda a, timeout: sockets.pop(0))
    result = client.complete(REQUEST)
    # The server read the request on a connection of its own: sending it again would
    # make it count twice.
    assert result.failure == "disconnect"
    assert len(sockets) == 1


def test_reused_connection_still_open_is_kept() -> None:
    sockets = [ScriptedSocket([VLLM_CHAT, VLLM_CHAT])]
    client = StreamingClient("http://server:8000", connector=lambda a, timeout: sockets.pop(0))
    assert client.complete(REQUEST).ok
    assert client.complete(REQUEST).ok
