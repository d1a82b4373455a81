"""The OpenAI-compatible wire format, as vLLM speaks it: parsing requests, encoding replies.

Requests are validated once here into a `CompletionRequest`; everything after trusts it.
Replies match vLLM's JSON byte for byte in shape (compact JSON, field order, `logprobs:
null`, `stop_reason`), including the streaming events: for chat a first chunk with
`delta: {"role": "assistant", "content": ""}`, one chunk per token, the last token's chunk
carrying `finish_reason`, then with `stream_options.include_usage` a usage chunk with
`choices: []`, then `data: [DONE]`.

The simulated model always generates exactly `max_tokens` tokens and finishes with
`"length"`, whatever `ignore_eos` says (it never "decides" to stop early). Without
`max_tokens` it generates `default_max_tokens`, cut to what fits in the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from kvswarm.sim.tokenizer import (
    WORDS,
    PromptError,
    chat_tokens,
    generated_text,
    id_tokens,
    split_text,
)

Endpoint = Literal["chat", "completions"]
DONE_EVENT = b"data: [DONE]\n\n"
_WORD_JSON = tuple(orjson.dumps(word) for word in WORDS)


class RequestError(Exception):
    """A request the server rejects: HTTP status, message and OpenAI error type."""

    def __init__(self, status: int, message: str, error_type: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.error_type)


@dataclass(frozen=True)
class ServedModel:
    """What the server says about its model and how it fills in defaults."""

    name: str
    max_model_len: int
    default_max_tokens: int


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completion request. `prompt` holds the prompt's tokens."""

    endpoint: Endpoint
    prompt: list[str]
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object")
    return data


def check_model(data: dict[str, Any], served: ServedModel) -> None:
    model = data.get("model")
    if model is not None and model != served.name:
        raise RequestError(404, f"The model `{model}` does not exist.", "NotFoundError")


def prompt_of(data: dict[str, Any], endpoint: Endpoint) -> list[str]:
    """The prompt's tokens: from `messages` (chat) or `prompt` (completions)."""
    try:
        if endpoint == "chat":
            return chat_tokens(data.get("messages"))
        return _completion_prompt(data.get("prompt"))
    except PromptError as exc:
        raise RequestError(400, str(exc)) from None


def _completion_prompt(prompt: Any) -> list[str]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return split_text(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return id_tokens(prompt)
    raise PromptError("'prompt' must be a string or a list of token ids (one prompt only)")


def parse_completion(body: bytes, endpoint: Endpoint, served: ServedModel) -> CompletionRequest:
    data = parse_json(body)
    check_model(data, served)
    if data.get("n", 1) != 1:
        raise RequestError(400, "the simulator supports n=1 only")
    prompt = prompt_of(data, endpoint)
    room = served.max_model_len - len(prompt)
    max_tokens = data.get("max_tokens")
    if endpoint == "chat" and data.get("max_completion_tokens") is not None:
        max_tokens = data["max_completion_tokens"]
    if max_tokens is None:
        max_tokens = max(1, min(served.default_max_tokens, room))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
    if len(prompt) + max_tokens > served.max_model_len:
        raise RequestError(
            400,
            f"This model's maximum context length is {served.max_model_len} tokens. However, "
            f"you requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the "
            f"{'messages' if endpoint == 'chat' else 'prompt'}, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
        )
    stream = bool(data.get("stream", False))
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "stream_options must be an object")
    return CompletionRequest(
        endpoint=endpoint,
        prompt=prompt,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=stream and bool(options.get("include_usage", False)),
        ignore_eos=bool(data.get("ignore_eos", False)),
    )


def error_body(status: int, message: str, error_type: str = "BadRequestError") -> bytes:
    """vLLM's error response: `{"error": {"message", "type", "param", "code"}}`."""
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": status}}
    )


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class StreamEncoder:
    """The SSE events of one streamed response, built from pre-encoded pieces."""

    def __init__(self, endpoint: Endpoint, response_id: str, created: int, model: str) -> None:
        self.endpoint = endpoint
        self._envelope = orjson.dumps(
            {
                "id": response_id,
                "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
                "created": created,
                "model": model,
            }
        )[:-1]  # without the closing brace, so choices can follow
        self._response_id = response_id
        if endpoint == "chat":
            self._token_head = (
                b"data: " + self._envelope + b',"choices":[{"index":0,"delta":{"content":'
            )
            self._token_tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
            self._last_tail = (
                b'},"logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
            )
        else:
            self._token_head = b"data: " + self._envelope + b',"choices":[{"index":0,"text":'
            self._token_tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
            self._last_tail = b',"logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'

    def first(self) -> bytes:
        """The role chunk that opens a chat stream (nothing for completions)."""
        if self.endpoint != "chat":
            return b""
        return (
            b"data: "
            + self._envelope
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def token(self, index: int, last: bool) -> bytes:
        """The event carrying generated token `index`."""
        word = _WORD_JSON[index % len(_WORD_JSON)]
        return b"".join((self._token_head, word, self._last_tail if last else self._token_tail))

    def text(self, text: str) -> bytes:
        """An event carrying `text` as generated text (not the last)."""
        return b"".join((self._token_head, orjson.dumps(text), self._token_tail))

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> bytes:
        body = orjson.dumps(
            {"choices": [], "usage": usage(prompt_tokens, completion_tokens, cached_tokens)}
        )
        return b"data: " + self._envelope + b"," + body[1:] + b"\n\n"

    def malformed(self) -> bytes:
        """An event whose JSON is cut off (an injected fault)."""
        return b"data: " + self._envelope + b',"choices":[{"index":0,"delta":{"cont\n\n'

    @staticmethod
    def error(message: str, status: int = 500) -> bytes:
        """An in-stream error event, as vLLM sends when generation fails mid-stream."""
        return b"data: " + error_body(status, message, "InternalServerError") + b"\n\n"


def completion_body(
    request: CompletionRequest,
    response_id: str,
    created: int,
    model: str,
    cached_tokens: int,
) -> bytes:
    """The non-streaming response body."""
    text = generated_text(request.max_tokens)
    if request.endpoint == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        kind = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        kind = "text_completion"
    return orjson.dumps(
        {
            "id": response_id,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage(request.prompt_tokens, request.max_tokens, cached_tokens),
        }
    )
