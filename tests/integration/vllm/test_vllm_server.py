"""A real vLLM (CPU build, tiny model) checked over plain HTTP and through kvswarm's profile.

These pin down what vLLM 0.32.0 actually does, which kvswarm's vLLM profile relies on:
/v1/models names the model and its context length, a repeated prompt is served from the
prefix cache in whole 128-token blocks, /reset_prefix_cache (dev mode) empties it, and
the /metrics counters give the cached share and the block size.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

import pytest

from kvswarm.client import CompletionRequest, StreamingClient
from kvswarm.engines import VLLM, RequestTimings, detect_engine
from kvswarm.engines.vllm import ServedModel, cacheable_tokens
from kvswarm.errors import KvswarmError
from kvswarm.metrics_sources import ServerWindow
from kvswarm.metrics_sources.scrape import ScrapeSource
from kvswarm.metrics_sources.snapshot import counter_deltas
from kvswarm.vllm.server import VllmServer
from kvswarm.workloads import text
from tests.integration.vllm.conftest import MAX_MODEL_LEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first session installs

BLOCK = 128  # tokens per KV block on vLLM's CPU backend


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def complete(server: VllmServer, prompt: str, max_tokens: int = 4) -> dict[str, Any]:
    """One non-streamed completion; its `usage`."""
    body = {
        "model": server.model_name,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    return post_json(f"{server.base_url}/v1/completions", body)["usage"]


def document(server: VllmServer, tokens: int) -> str:
    """Generated prose of about `tokens` tokens, starting with a tag no other test uses, so
    nothing of it is cached before this test sends it."""
    pieces = text.prose(text.seeded("vllm-tests", tokens))
    doc = f"[{uuid.uuid4().hex}] "
    while len(doc) < tokens * 8:
        doc += next(pieces)
    reply = post_json(f"{server.base_url}/tokenize", {"model": server.model_name, "prompt": doc})
    return doc[: len(doc) * tokens // reply["count"]]


def cached(usage: dict[str, Any]) -> int:
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def test_models_name_the_tiny_model_and_its_context_length(vllm_server: VllmServer) -> None:
    served = VLLM.served_models(vllm_server.base_url)
    assert served == (ServedModel("tiny", MAX_MODEL_LEN, str(vllm_server.model)),)


def test_engine_is_detected_as_vllm(vllm_server: VllmServer) -> None:
    assert detect_engine(vllm_server.base_url)[0] == "vllm"


def test_repeated_long_prompt_is_cached_in_whole_blocks(vllm_server: VllmServer) -> None:
    doc = document(vllm_server, 1600)
    first = complete(vllm_server, doc + "\nQuestion: what is the first point?")
    second = complete(vllm_server, doc + "\nQuestion: summarise the last paragraph.")
    assert cached(first) == 0
    shared = min(first["prompt_tokens"], second["prompt_tokens"]) - 12  # the questions differ
    assert cached(second) % BLOCK == 0
    assert cached(second) >= cacheable_tokens(shared, second["prompt_tokens"], BLOCK) - BLOCK
    assert 0 < cached(second) < second["prompt_tokens"]


def test_reset_makes_the_next_identical_request_start_cold(vllm_server: VllmServer) -> None:
    prompt = document(vllm_server, 600)
    tokens = complete(vllm_server, prompt)["prompt_tokens"]
    assert cached(complete(vllm_server, prompt)) == cacheable_tokens(tokens, tokens, BLOCK) > 0
    reset = VLLM.reset_prefix_cache(vllm_server.base_url)
    assert reset.status == "reset", reset.detail
    assert cached(complete(vllm_server, prompt)) == 0


def test_counters_give_the_profile_a_cached_share_of_hits_over_queries(
    vllm_server: VllmServer,
) -> None:
    source = ScrapeSource("target", f"{vllm_server.base_url}/metrics", 5.0)
    prompt = document(vllm_server, 700)
    start = source.snapshot()
    usages = [complete(vllm_server, prompt) for _ in range(3)]
    end = source.snapshot()
    deltas = counter_deltas(start, end)
    hits = deltas['vllm:prefix_cache_hits_total{engine="0",model_name="tiny"}']
    queries = deltas['vllm:prefix_cache_queries_total{engine="0",model_name="tiny"}']
    share = VLLM.cached_share(deltas)
    assert share is not None and share.formula == "prefix_cache_hits / prefix_cache_queries"
    tokens = usages[0]["prompt_tokens"]
    expected = 2 * cacheable_tokens(tokens, tokens, BLOCK)  # the 2nd and 3rd hit
    assert hits == sum(cached(usage) for usage in usages) == expected
    assert share.value == pytest.approx(hits / queries)
    assert queries == sum(usage["prompt_tokens"] for usage in usages)


def test_block_size_is_read_from_cache_config_info(vllm_server: VllmServer) -> None:
    snapshot = ScrapeSource("target", f"{vllm_server.base_url}/metrics", 5.0).snapshot()
    assert VLLM.block_size(snapshot) == BLOCK
    window = ServerWindow.open(vllm_server.base_url, engine="vllm")
    assert "this server's blocks: 128 tokens" in window.close().cache_semantics


def test_a_model_the_server_does_not_serve_is_one_line_error(vllm_server: VllmServer) -> None:
    url = f"{vllm_server.base_url}/v1"
    assert VLLM.check_model(url, "tiny") is None
    problem = VLLM.check_model(url, "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4")
    assert problem is not None and "\n" not in problem
    assert "'Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4'" in problem and "'tiny'" in problem
    assert "set target.model: tiny" in problem
    with pytest.raises(KvswarmError, match="serves 'tiny'"):
        VLLM.require_model(url, "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4")
    assert VLLM.require_model(url, "tiny") == ServedModel(
        "tiny", MAX_MODEL_LEN, str(vllm_server.model)
    )


def test_vllm_sends_no_per_request_timings(vllm_server: VllmServer) -> None:
    client = StreamingClient(vllm_server.base_url)
    try:
        result = client.complete(
            CompletionRequest(
                endpoint="chat",
                model="tiny",
                max_tokens=8,
                messages=[{"role": "user", "content": "Tell me about the sea."}],
                extra={"temperature": 0, "ignore_eos": True},
            )
        )
    finally:
        client.close()
    assert result.ok, result.error
    assert result.completion_tokens == 8 and result.prompt_tokens
    assert result.server_timings is None
    assert VLLM.request_timings(result) == RequestTimings()


def test_a_chat_stream_says_what_it_found_in_and_wrote_to_the_prefix_cache(
    vllm_server: VllmServer,
) -> None:
    """`usage.prompt_tokens_details` of a chat stream (vLLM 0.32 reports
    `created_cache_tokens` on chat completions only): the first request of a document
    finds nothing and writes its whole blocks; the same document again finds them."""
    messages = [{"role": "user", "content": document(vllm_server, 700)}]
    request = CompletionRequest(
        endpoint="chat", model="tiny", max_tokens=4, messages=messages,
        extra={"temperature": 0, "ignore_eos": True},
    )  # fmt: skip
    client = StreamingClient(vllm_server.base_url)
    try:
        first, second = client.complete(request), client.complete(request)
    finally:
        client.close()
    assert first.ok and second.ok, (first.error, second.error)
    assert first.cached_tokens == 0
    assert first.created_cache_tokens == first.prompt_tokens // BLOCK * BLOCK
    assert second.cached_tokens == first.created_cache_tokens
    assert second.created_cache_tokens == 0
