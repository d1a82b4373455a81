"""The simulator's OpenAI/vLLM wire format: request validation and reply shapes."""

from __future__ import annotations

import json

import pytest

from kvswarm.sim.protocol import (
    CompletionRequest,
    RequestError,
    ServedModel,
    StreamEncoder,
    completion_body,
    parse_completion,
)
from kvswarm.sim.tokenizer import chat_tokens, generated_text, split_text, token_ids

SERVED = ServedModel("m", max_model_len=100, default_max_tokens=16)


def parse(body: dict, endpoint: str = "completions") -> CompletionRequest:
    return parse_completion(json.dumps(body).encode(), endpoint, SERVED)  # type: ignore[arg-type]


def event(data: bytes) -> dict:
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    return json.loads(data[6:])


def test_one_whitespace_separated_word_is_one_token() -> None:
    assert split_text("Hello, world.  again\nnow") == ["Hello,", "world.", "again", "now"]


def test_chat_template_wraps_each_message_in_markers() -> None:
    tokens = chat_tokens([{"role": "user", "content": "a b"}])
    assert tokens == ["<|im_start|>", "user", "a", "b", "<|im_end|>", "<|im_start|>", "assistant"]


def test_token_ids_are_stable() -> None:
    assert token_ids(["hello"]) == token_ids(["hello"]) == [907060870 % 151_936]


def test_generated_text_splits_back_into_as_many_tokens() -> None:
    assert len(split_text(generated_text(200))) == 200


def test_max_tokens_defaults_to_default_max_tokens() -> None:
    assert parse({"prompt": "a b"}).max_tokens == 16


def test_default_max_tokens_is_cut_to_fit_the_context() -> None:
    assert parse({"prompt": " ".join(["w"] * 90)}).max_tokens == 10


def test_max_completion_tokens_counts_for_chat() -> None:
    request = parse(
        {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 3}, "chat"
    )
    assert request.max_tokens == 3


def test_prompt_longer_than_context_is_a_400() -> None:
    with pytest.raises(RequestError) as caught:
        parse({"prompt": " ".join(["w"] * 95), "max_tokens": 10})
    assert caught.value.status == 400
    assert "maximum context length is 100 tokens" in caught.value.message


def test_unknown_model_is_a_404() -> None:
    with pytest.raises(RequestError) as caught:
        parse({"model": "other", "prompt": "a"})
    assert caught.value.status == 404


def test_prompt_of_token_ids_counts_each_id() -> None:
    assert parse({"prompt": [1, 2, 3]}).prompt_tokens == 3


def test_include_usage_only_applies_to_streams() -> None:
    assert not parse({"prompt": "a", "stream_options": {"include_usage": True}}).include_usage
    assert parse(
        {"prompt": "a", "stream": True, "stream_options": {"include_usage": True}}
    ).include_usage


def test_chat_stream_events_have_vllm_shapes() -> None:
    encoder = StreamEncoder("chat", "chatcmpl-1", 123, "m")
    first, token, last = (
        event(encoder.first()),
        event(encoder.token(0, False)),
        event(encoder.token(1, True)),
    )
    assert first == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 123,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert token["choices"][0]["delta"] == {"content": " the"}
    assert token["choices"][0]["finish_reason"] is None
    assert last["choices"][0]["finish_reason"] == "length"


def test_completion_stream_events_carry_text() -> None:
    encoder = StreamEncoder("completions", "cmpl-1", 1, "m")
    assert encoder.first() == b""
    chunk = event(encoder.token(2, False))
    assert chunk["object"] == "text_completion"
    assert chunk["choices"][0]["text"] == " brown"


def test_usage_event_has_empty_choices_and_cached_tokens() -> None:
    usage = event(StreamEncoder("chat", "x", 1, "m").usage(10, 4, 8))
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 10,
        "total_tokens": 14,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 8},
    }


def test_malformed_event_is_not_json() -> None:
    with pytest.raises(ValueError):
        event(StreamEncoder("chat", "x", 1, "m").malformed())


def test_non_streamed_chat_body_has_message_and_usage() -> None:
    request = parse({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3}, "chat")
    body = json.loads(completion_body(request, "chatcmpl-1", 1, "m", cached_tokens=0))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == " the quick brown"
    assert body["usage"]["completion_tokens"] == 3
