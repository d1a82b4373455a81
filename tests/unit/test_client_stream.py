"""The streaming client over recorded byte streams: parsing, usage, failure categories.

A fake socket replays a recorded HTTP response in the pieces a test chooses, so every
behaviour is checked whatever way the bytes are split across `recv` calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvswarm.client import CompletionRequest, StreamingClient, Timeouts


class FakeSocket:
    """Replays `pieces` from recv; then EOF, or a timeout when `stall_at_end`."""

    def __init__(self, pieces: list[bytes], stall_at_end: bool = False) -> None:
        self.pieces = list(pieces)
        self.stall_at_end = stall_at_end
        self.sent = b""
        self.closed = False

    def settimeout(self, _timeout: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        if not self.pieces:
            if self.stall_at_end:
                raise TimeoutError("timed out")
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > size:
            self.pieces.insert(0, piece[size:])
            piece = piece[:size]
        return piece

    def close(self) -> None:
        self.closed = True


def sse(*events: object) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += f"data: {data}\n\n".encode()
    return out


def chunked_response(body: bytes, status: str = "200 OK", chunk_size: int = 37) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk_size]), body[i : i + chunk_size])
        for i in range(0, len(body), chunk_size)
    )
    return head + chunks + b"0\r\n\r\n"


def json_response(obj: object, status: str = "200 OK") -> bytes:
    body = json.dumps(obj).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def chat_chunk(content: str | None = None, finish: str | None = None, **delta: str) -> dict:
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 8},
    },
}

VLLM_CHAT = chunked_response(
    sse(
        chat_chunk("", role="assistant"),
        chat_chunk("Hello"),
        chat_chunk(""),
        chat_chunk(" wor"),
        chat_chunk("ld", finish="length"),
        USAGE,
        "[DONE]",
    )
)


def run(
    pieces: list[bytes],
    *,
    endpoint: str = "chat",
    stream: bool = True,
    stall_at_end: bool = False,
    timeouts: Timeouts | None = None,
):
    fake = FakeSocket(pieces, stall_at_end)
    client = StreamingClient(
        "http://server:8000",
        api_key="sk-secret",
        timeouts=timeouts or Timeouts(connect_s=1, ttft_s=1, idle_s=1),
        connector=lambda address, timeout: fake,
    )
    request = CompletionRequest(
        endpoint=endpoint,
        model="m",
        max_tokens=3,
        messages=[{"role": "user", "content": "hi"}],
        prompt="hi",
        stream=stream,
        request_id="w-1-1",
    )
    return client.complete(request), fake


def test_vllm_chat_stream_gives_text_usage_and_cached_tokens() -> None:
    result, _ = run([VLLM_CHAT])
    assert result.ok, result.error
    assert result.text == "Hello world"
    assert result.text_chunks == 3
    assert len(result.itl_s) == 2
    assert (result.prompt_tokens, result.output_tokens, result.cached_tokens) == (12, 3, 8)
    assert result.output_tokens_source == "usage"
    assert result.finish_reason == "length"
    assert result.status_code == 200


def test_vllm_usage_gives_the_tokens_a_request_wrote_to_the_prefix_cache() -> None:
    details = {"cached_tokens": 128, "created_cache_tokens": 256}
    usage = {**USAGE, "usage": {**USAGE["usage"], "prompt_tokens_details": details}}
    stream = chunked_response(sse(chat_chunk("Hi", finish="length"), usage, "[DONE]"))
    result, _ = run([stream])
    assert (result.cached_tokens, result.created_cache_tokens) == (128, 256)


@pytest.mark.parametrize("split", range(1, len(VLLM_CHAT)))
def test_a_stream_split_at_any_byte_parses_the_same(split: int) -> None:
    result, _ = run([VLLM_CHAT[:split], VLLM_CHAT[split:]])
    assert result.ok, (split, result.error)
    assert (result.text, result.text_chunks, result.output_tokens) == ("Hello world", 3, 3)
    assert result.cached_tokens == 8


def test_a_stream_delivered_one_byte_per_recv_parses_the_same() -> None:
    result, _ = run([VLLM_CHAT[i : i + 1] for i in range(len(VLLM_CHAT))])
    assert result.ok and result.text == "Hello world" and result.output_tokens == 3


def test_request_asks_for_usage_and_sends_bearer_key_and_request_id() -> None:
    _, fake = run([VLLM_CHAT])
    head, _, body = fake.sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1")
    assert b"Authorization: Bearer sk-secret" in head
    assert b"X-Request-Id: w-1-1" in head
    sent = json.loads(body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


def test_completions_endpoint_reads_choice_text() -> None:
    body = sse(
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": "a", "finish_reason": None}],
        },
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": "b", "finish_reason": "stop"}],
        },
        "[DONE]",
    )
    result, fake = run([chunked_response(body)], endpoint="completions")
    assert fake.sent.startswith(b"POST /v1/completions HTTP/1.1")
    assert json.loads(fake.sent.partition(b"\r\n\r\n")[2])["prompt"] == "hi"
    assert result.ok and result.text == "ab"


def test_without_usage_output_tokens_fall_back_to_text_chunks() -> None:
    body = sse(chat_chunk("a"), chat_chunk("b"), chat_chunk("c"), "[DONE]")
    result, _ = run([chunked_response(body)])
    assert result.output_tokens == 3
    assert result.output_tokens_source == "chunks"
    assert result.tpot_s is not None


def test_reasoning_content_counts_as_generated_text() -> None:
    body = sse(chat_chunk(reasoning_content="think"), chat_chunk("answer"), USAGE, "[DONE]")
    result, _ = run([chunked_response(body)])
    assert result.ok and result.text == "thinkanswer" and result.text_chunks == 2


def test_stream_ending_without_done_is_complete_when_the_message_ends() -> None:
    body = sse(chat_chunk("a"), chat_chunk("b", finish="stop"), USAGE)
    result, _ = run([chunked_response(body)])
    assert result.ok and result.e2e_s is not None and result.output_tokens == 3


def test_usage_on_the_finish_chunk_is_read_like_llama_cpp_sends_it() -> None:
    final = chat_chunk("b", finish="length")
    final["usage"] = {"prompt_tokens": 5, "completion_tokens": 2}
    final["timings"] = {"prompt_ms": 12.5, "predicted_ms": 30.0, "cache_n": 3}
    result, _ = run([chunked_response(sse(chat_chunk("a"), final, "[DONE]"))])
    assert result.output_tokens == 2 and result.prompt_tokens == 5
    assert result.server_timings == {"prompt_ms": 12.5, "predicted_ms": 30.0, "cache_n": 3}


def test_non_streamed_response_has_ttft_equal_to_e2e() -> None:
    response = json_response(
        {
            "choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        }
    )
    result, fake = run([response], stream=False)
    assert json.loads(fake.sent.partition(b"\r\n\r\n")[2])["stream"] is False
    assert result.ok and not result.streamed
    assert result.ttft_s == result.e2e_s
    assert result.output_tokens == 2 and result.tpot_s is None


def test_http_error_status_is_its_own_category_with_the_server_message() -> None:
    response = json_response({"object": "error", "message": "model overloaded"}, "503 Busy")
    result, _ = run([response])
    assert result.failure == "http_503"
    assert result.error == "model overloaded"


def test_error_object_mid_stream_is_server_error() -> None:
    body = sse(chat_chunk("a"), {"error": {"message": "engine died", "code": 500}})
    result, _ = run([chunked_response(body)])
    assert result.failure == "server_error"
    assert "engine died" in result.error


def test_connection_cut_mid_stream_is_disconnect() -> None:
    whole = chunked_response(sse(chat_chunk("a"), chat_chunk("b"), USAGE, "[DONE]"))
    result, fake = run([whole[: len(whole) // 2]])
    assert result.failure == "disconnect"
    assert fake.closed


def test_unparseable_json_is_bad_chunk() -> None:
    result, _ = run([chunked_response(sse(chat_chunk("a"), "{not json", "[DONE]"))])
    assert result.failure == "bad_chunk"


def test_invalid_utf8_is_bad_chunk() -> None:
    body = sse(chat_chunk("a")) + b'data: {"x": "\xff\xfe"}\n\n'
    result, _ = run([chunked_response(body)])
    assert result.failure == "bad_chunk"


def test_invalid_http_is_bad_chunk() -> None:
    result, _ = run([b"SPDY/9 what\r\n\r\n"])
    assert result.failure == "bad_chunk"


def test_stream_without_generated_text_is_empty() -> None:
    body = sse(chat_chunk("", role="assistant"), chat_chunk(""), USAGE, "[DONE]")
    result, _ = run([chunked_response(body)])
    assert result.failure == "empty"


def unfinished(body: bytes) -> bytes:
    """A chunked response whose body is still open (no terminating chunk yet)."""
    return chunked_response(body)[: -len(b"0\r\n\r\n")]


def test_silence_before_the_first_token_is_timeout_ttft() -> None:
    result, _ = run([unfinished(sse(chat_chunk("", role="assistant")))], stall_at_end=True)
    assert result.failure == "timeout_ttft"


def test_silence_after_the_first_token_is_timeout_idle() -> None:
    result, _ = run([unfinished(sse(chat_chunk("Hello")))], stall_at_end=True)
    assert result.failure == "timeout_idle"
    assert result.ttft_s is not None


def test_refused_connection_is_connect() -> None:
    def refuse(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    client = StreamingClient("http://server:1/v1", connector=refuse)
    result = client.complete(CompletionRequest(endpoint="chat", model="m", max_tokens=1))
    assert result.failure == "connect"
    assert "Connection refused" in result.error
    assert result.start_unix_s > 1.7e9  # when it was tried, though nothing was sent


def test_every_failure_category_is_exactly_one_of_the_documented_ones() -> None:
    from kvswarm.records import FAILURE_CATEGORIES

    documented = {c for c in FAILURE_CATEGORIES if not c.startswith("http_")}
    seen = {
        run([chunked_response(sse(chat_chunk("a"), "{x"))])[0].failure,
        run([chunked_response(sse(chat_chunk("")))])[0].failure,
        run([VLLM_CHAT[:100]])[0].failure,
    }
    assert seen <= documented


def test_keep_alive_connection_the_server_closed_is_replaced_before_sending() -> None:
    first, second = FakeSocket([VLLM_CHAT]), FakeSocket([VLLM_CHAT])
    sockets = [first, second]
    client = StreamingClient(
        "http://server:8000", connector=lambda address, timeout: sockets.pop(0)
    )
    request = CompletionRequest(endpoint="chat", model="m", max_tokens=3)
    assert client.complete(request).ok
    sent_first = first.sent
    # The kept-alive first socket is now at EOF, as if the server had closed it.
    again = client.complete(request)
    assert again.ok, again.error
    assert first.closed and not sockets
    assert first.sent == sent_first  # the second request went on the new connection only


def test_a_connection_closed_on_a_fresh_socket_is_not_retried() -> None:
    sockets = [FakeSocket([]), FakeSocket([VLLM_CHAT])]
    client = StreamingClient(
        "http://server:8000", connector=lambda address, timeout: sockets.pop(0)
    )
    result = client.complete(CompletionRequest(endpoint="chat", model="m", max_tokens=3))
    assert result.failure == "disconnect"
    assert len(sockets) == 1


LLAMACPP_FIXTURES = Path(__file__).resolve().parents[1] / "integration" / "llamacpp" / "fixtures"


@pytest.mark.parametrize(
    ("name", "endpoint", "has_usage"),
    [
        ("chat_stream_include_usage.txt", "chat", True),
        ("chat_stream_no_usage.txt", "chat", False),
        ("completions_stream_include_usage.txt", "completions", True),
    ],
)
def test_recorded_llama_cpp_streams_parse_with_usage_and_timings(
    name: str, endpoint: str, has_usage: bool
) -> None:
    body = (LLAMACPP_FIXTURES / name).read_bytes()
    result, _ = run([chunked_response(body)], endpoint=endpoint)
    assert result.ok, result.error
    assert result.text_chunks == 8 and result.finish_reason == "length"
    assert result.server_timings is not None and "prompt_ms" in result.server_timings
    if has_usage:
        assert result.output_tokens_source == "usage" and result.output_tokens == 8
        assert result.cached_tokens == result.server_timings["cache_n"]
    else:
        assert result.output_tokens_source == "chunks" and result.output_tokens == 8


def test_record_takes_cached_and_prompt_tokens_from_llama_cpp_timings_without_usage() -> None:
    from kvswarm.engines import LLAMA_CPP
    from kvswarm.records import build_record

    body = (LLAMACPP_FIXTURES / "chat_stream_no_usage.txt").read_bytes()
    result, _ = run([chunked_response(body)])
    timings = result.server_timings
    record = build_record(
        result,
        LLAMA_CPP.request_timings(result),
        request_id="r",
        worker_id="w",
        user_id=1,
        scenario="s",
        mode="m",
        endpoint="chat",
    )
    assert record.cached_tokens == timings["cache_n"]
    assert record.prompt_tokens == timings["prompt_n"] + timings["cache_n"]
    assert record.server_prefill_s == pytest.approx(timings["prompt_ms"] / 1000)
    assert record.server_decode_s == pytest.approx(timings["predicted_ms"] / 1000)


def with_trailers(response: bytes, trailers: dict[str, str]) -> bytes:
    """A chunked response whose last chunk is followed by `trailers`."""
    assert response.endswith(b"0\r\n\r\n")
    lines = "".join(f"{name}: {value}\r\n" for name, value in trailers.items())
    return response[: -len(b"\r\n")] + lines.encode() + b"\r\n"


@pytest.mark.parametrize("split", [1, 7, 64])
def test_trailers_after_the_last_chunk_land_in_result_headers(split: int) -> None:
    data = with_trailers(VLLM_CHAT, {"X-Sim-Decode-Ms": "12.500"})
    result, _ = run([data[i : i + split] for i in range(0, len(data), split)])
    assert result.ok, result.error
    assert result.headers["x-sim-decode-ms"] == "12.500"
    assert result.headers["content-type"] == "text/event-stream"
