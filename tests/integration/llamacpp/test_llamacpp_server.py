"""A real llama-server with the tiny model, checked over plain HTTP.

These pin down what llama.cpp (build 11434) actually sends, which kvswarm's client and
engine adapters rely on: where usage and `timings` sit in each stream, that a repeated
prompt is served from the slot's prompt cache, the /metrics names, /tokenize's body.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.build import LLAMA_CPP_BUILD, ensure_llama_server
from kvswarm.llamacpp.server import (
    DEFAULT_ALIAS,
    LlamaServer,
    LlamaServerOptions,
    start_llama_server,
)
from kvswarm.workloads import text
from tests.integration.llamacpp import rawhttp
from tests.integration.llamacpp.conftest import CTX_PER_SLOT, SLOTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first run builds

FIXTURES = Path(__file__).parent / "fixtures"
MAX_TOKENS = 8


def chat_body(content: str, max_tokens: int = MAX_TOKENS, **extra: Any) -> dict[str, Any]:
    return {
        "model": DEFAULT_ALIAS,
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": content},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def completions_body(prompt: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {
        "model": DEFAULT_ALIAS,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def chunk_kind(chunk: dict[str, Any]) -> str:
    """What a chunk carries, for comparing stream layouts: role, text, finish, usage."""
    kinds = []
    for choice in chunk["choices"]:
        delta = choice.get("delta", {})
        if delta.get("role"):
            kinds.append("role")
        if delta.get("content") or choice.get("text"):
            kinds.append("text")
        if choice.get("finish_reason"):
            kinds.append("finish")
    if "usage" in chunk:
        kinds.append("usage")
    if "timings" in chunk:
        kinds.append("timings")
    return "+".join(kinds) or "empty"


def layout(chunks: list[dict[str, Any]]) -> list[str]:
    """Chunk kinds in order, runs of text chunks folded into one `text*`."""
    kinds: list[str] = []
    for kind in map(chunk_kind, chunks):
        kind = "text*" if kind == "text" else kind
        if not (kinds and kinds[-1] == kind == "text*"):
            kinds.append(kind)
    return kinds


def sized_document(server: LlamaServer, tokens: int, *seed: object) -> str:
    """Generated prose of about `tokens` tokens by the server's own tokenizer."""
    pieces = text.prose(text.seeded("llamacpp-tests", *seed))
    doc = ""
    while len(doc) < tokens * 8:
        doc += next(pieces)
    count = len(rawhttp.post_json(server.base_url, "/tokenize", {"content": doc})["tokens"])
    return doc[: len(doc) * tokens // count]


# --- health, props, models -------------------------------------------------------------------


def test_health_answers_ok(llama_server: LlamaServer) -> None:
    status, body = rawhttp.get(llama_server.base_url, "/health")
    assert status == 200
    assert b"ok" in body


def test_props_report_slots_and_per_slot_context(llama_server: LlamaServer) -> None:
    props = rawhttp.get_json(llama_server.base_url, "/props")
    assert props["total_slots"] == SLOTS
    assert props["default_generation_settings"]["n_ctx"] == CTX_PER_SLOT
    assert props["model_alias"] == DEFAULT_ALIAS
    assert f"b{LLAMA_CPP_BUILD}" in props["build_info"]


def test_models_lists_the_tiny_model_under_its_alias(llama_server: LlamaServer) -> None:
    models = rawhttp.get_json(llama_server.base_url, "/v1/models")
    (model,) = models["data"]
    assert model["id"] == DEFAULT_ALIAS
    assert model["meta"]["n_vocab"] == 8192
    assert 15_000_000 < model["meta"]["n_params"] < 30_000_000


# --- tokenize -------------------------------------------------------------------------------


def test_tokenize_content_returns_the_prompt_tokens(llama_server: LlamaServer) -> None:
    prompt = "Review the quarterly budget of the regional cache service."
    tokens = rawhttp.post_json(llama_server.base_url, "/tokenize", {"content": prompt})["tokens"]
    assert tokens and all(isinstance(token, int) for token in tokens)
    # The same count the server bills for that prompt (no BOS is added).
    reply = rawhttp.stream(llama_server.base_url, "/v1/completions", completions_body(prompt, 1))
    assert reply.chunks()[-1]["usage"]["prompt_tokens"] == len(tokens)


def test_tokenize_reads_chatml_markers_as_single_special_tokens(
    llama_server: LlamaServer,
) -> None:
    body = {
        "content": "<|im_start|>user\nhi<|im_end|>",
        "add_special": False,
        "parse_special": True,
    }
    tokens = rawhttp.post_json(llama_server.base_url, "/tokenize", body)["tokens"]
    assert tokens[0] == 1 and tokens[-1] == 2  # <|im_start|>, <|im_end|>


# --- streams ---------------------------------------------------------------------------------


def test_chat_stream_sends_text_then_finish_then_a_usage_chunk(llama_server: LlamaServer) -> None:
    reply = rawhttp.stream(
        llama_server.base_url, "/v1/chat/completions", chat_body("Summarise the budget.")
    )
    assert reply.status == 200
    assert reply.events()[-1] == "[DONE]"
    chunks = reply.chunks()
    assert layout(chunks) == ["role", "text*", "finish", "usage+timings"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == MAX_TOKENS
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
    timings = usage_chunk["timings"]
    assert timings["predicted_n"] == MAX_TOKENS
    assert timings["prompt_n"] + timings["cache_n"] == usage_chunk["usage"]["prompt_tokens"]


def test_chat_stream_without_include_usage_has_timings_on_finish_chunk(
    llama_server: LlamaServer,
) -> None:
    body = chat_body("Summarise the budget, briefly.")
    del body["stream_options"]
    chunks = rawhttp.stream(llama_server.base_url, "/v1/chat/completions", body).chunks()
    assert layout(chunks) == ["role", "text*", "finish+timings"]


def test_completions_stream_puts_usage_on_the_finish_chunk(llama_server: LlamaServer) -> None:
    reply = rawhttp.stream(
        llama_server.base_url, "/v1/completions", completions_body("The budget review")
    )
    assert reply.events()[-1] == "[DONE]"
    chunks = reply.chunks()
    assert layout(chunks) == ["text*", "finish+usage+timings"]
    assert chunks[-1]["choices"][0]["text"] == ""
    assert chunks[-1]["usage"]["completion_tokens"] == MAX_TOKENS


def test_text_chunks_never_outnumber_generated_tokens(llama_server: LlamaServer) -> None:
    chunks = rawhttp.stream(
        llama_server.base_url, "/v1/chat/completions", chat_body("Name a risk.", 16)
    ).chunks()
    text_chunks = [c for c in chunks if chunk_kind(c) == "text"]
    # One per token at most: llama.cpp holds back partial UTF-8 and stop-word prefixes,
    # so count output tokens from usage, not from chunks.
    assert 0 < len(text_chunks) <= chunks[-1]["usage"]["completion_tokens"] == 16


@pytest.mark.parametrize(
    ("fixture", "path", "expected"),
    [
        ("chat_stream_include_usage.txt", "/v1/chat/completions", "chat"),
        ("chat_stream_no_usage.txt", "/v1/chat/completions", "chat-no-usage"),
        ("completions_stream_include_usage.txt", "/v1/completions", "completions"),
    ],
)
def test_recorded_stream_fixture_has_the_live_layout(
    llama_server: LlamaServer, fixture: str, path: str, expected: str
) -> None:
    recorded = rawhttp.RawStream(200, (FIXTURES / fixture).read_bytes(), 0.0)
    body = completions_body("Hi") if expected == "completions" else chat_body("Summarise it.")
    if expected == "chat-no-usage":
        del body["stream_options"]
    live = rawhttp.stream(llama_server.base_url, path, body)
    assert layout(recorded.chunks()) == layout(live.chunks())
    assert recorded.events()[-1] == live.events()[-1] == "[DONE]"


# --- prompt cache ------------------------------------------------------------------------------


def test_repeated_long_prompt_is_served_from_the_slot_cache(llama_server: LlamaServer) -> None:
    doc = sized_document(llama_server, 1500, "repeat")
    body = chat_body(doc, 2)
    first = rawhttp.stream(llama_server.base_url, "/v1/chat/completions", body).chunks()[-1]
    second = rawhttp.stream(llama_server.base_url, "/v1/chat/completions", body).chunks()[-1]
    assert first["timings"]["cache_n"] < 32  # at most the chat template's opening
    assert first["timings"]["prompt_n"] > 1200
    # All but the last prompt token come from the slot's cache.
    assert second["timings"]["cache_n"] == second["usage"]["prompt_tokens"] - 1
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == second["timings"]["cache_n"]
    assert second["timings"]["prompt_ms"] < first["timings"]["prompt_ms"] / 5


def test_shared_prefix_with_a_new_suffix_reuses_the_prefix(llama_server: LlamaServer) -> None:
    doc = sized_document(llama_server, 1200, "prefix")
    url = llama_server.base_url
    first = rawhttp.stream(url, "/v1/chat/completions", chat_body(doc + "\nFirst?", 2))
    second = rawhttp.stream(url, "/v1/chat/completions", chat_body(doc + "\nSecond one?", 2))
    cold, warm = first.chunks()[-1]["timings"], second.chunks()[-1]["timings"]
    assert warm["cache_n"] > 0.9 * cold["prompt_n"]
    assert warm["prompt_n"] < 20
    assert second.first_byte_s < first.first_byte_s


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_count_prompt_cached_and_predicted_tokens(llama_server: LlamaServer) -> None:
    url = llama_server.base_url
    before = rawhttp.metrics(url)
    body = completions_body("Count these prompt tokens, please, twice.")
    replies = [rawhttp.stream(url, "/v1/completions", body).chunks()[-1] for _ in range(2)]
    after = rawhttp.metrics(url)

    def delta(name: str) -> float:
        return after[f"llamacpp:{name}"] - before[f"llamacpp:{name}"]

    # prompt_tokens_total excludes cached tokens: it is the sum of timings.prompt_n.
    assert delta("prompt_tokens_total") == sum(r["timings"]["prompt_n"] for r in replies)
    assert delta("prompt_tokens_cached_total") == sum(r["timings"]["cache_n"] for r in replies)
    assert delta("tokens_predicted_total") == 2 * MAX_TOKENS
    for gauge in ("requests_processing", "requests_deferred"):
        assert f"llamacpp:{gauge}" in after


# --- the server handle and the CLI -------------------------------------------------------------


def test_second_build_call_returns_the_cached_binary_at_once(llama_server: LlamaServer) -> None:
    started = time.monotonic()
    build = ensure_llama_server()
    assert time.monotonic() - started < 1.0
    assert build.binary.is_file()
    assert f"build {LLAMA_CPP_BUILD}" in build.version_line


def test_stop_ends_the_server_and_frees_its_port(tmp_path: Path) -> None:
    server = start_llama_server(log_path=tmp_path / "server.log")
    with server:
        assert rawhttp.get(server.base_url, "/health")[0] == 200
    assert server.process.poll() is not None
    with pytest.raises(OSError):
        rawhttp.get(server.base_url, "/health")
    server.stop()  # a second stop is harmless


def test_a_server_that_cannot_start_is_one_line_error(tmp_path: Path) -> None:
    not_a_model = tmp_path / "broken.gguf"
    not_a_model.write_bytes(b"this is not a gguf file")
    with pytest.raises(KvswarmError, match="exited with code") as failure:
        start_llama_server(model=not_a_model, log_path=tmp_path / "server.log")
    assert "\n" not in str(failure.value)


def test_engine_llamacpp_verb_serves_until_sigterm(llama_server: LlamaServer) -> None:
    command = [sys.executable, "-m", "kvswarm.cli", "engine", "llamacpp", "--print-json"]
    process = subprocess.Popen(
        [*command, "--slots", "1", "--ctx-per-slot", "1024"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert rawhttp.get(info["base_url"], "/health")[0] == 200
        assert rawhttp.get_json(info["base_url"], "/props")["total_slots"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(info["pid"], 0)  # the server was stopped and reaped, not orphaned
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_port_in_use_is_reported_as_such(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = LlamaServerOptions(port=taken.getsockname()[1], slots=1, ctx_per_slot=512)
        with pytest.raises(KvswarmError, match="port in use"):
            start_llama_server(options, log_path=tmp_path / "server.log")


def test_the_engine_profile_resets_the_slot_caches(llama_server: LlamaServer) -> None:
    from kvswarm.engines import engine_profile

    doc = sized_document(llama_server, 1200, "reset")
    body = chat_body(doc, 2)
    for _ in range(2):
        warm = rawhttp.stream(llama_server.base_url, "/v1/chat/completions", body).chunks()[-1]
    assert warm["timings"]["cache_n"] > 1000
    reset = engine_profile("llama.cpp").reset_prefix_cache(llama_server.base_url, 10.0)
    assert reset.status == "reset", reset
    after = rawhttp.stream(llama_server.base_url, "/v1/chat/completions", body).chunks()[-1]
    # Nothing of the document is left in any slot (the chat template's opening may be
    # matched by chance in a freshly erased slot: llama.cpp matches token by token).
    assert after["timings"]["cache_n"] < 32, after["timings"]
