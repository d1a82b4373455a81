"""The non-disaggregated simulated server over plain HTTP: API shapes, the cost model
(prefix cache, eviction, batch slowdown, queue), /metrics and the ground-truth log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kvswarm.sim import CostModel, start_stack
from kvswarm.sim.groundtruth import read_ground_truth
from tests.integration.test_sim_http import (
    fast_options,
    get,
    metric_value,
    post,
    scrape,
    stream,
    words,
)

MODEL = "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"


def test_models_endpoint_says_it_is_a_simulator() -> None:
    with start_stack(fast_options()) as sim:
        status, body = get(sim.base_url + "/models")
    assert status == 200
    assert b'"simulator":true' in body and MODEL.encode() in body


def test_tokenize_counts_one_token_per_word() -> None:
    with start_stack(fast_options()) as sim:
        status, _, body = post(sim.root_url, "/tokenize", {"model": MODEL, "prompt": words(37)})
    assert status == 200
    assert body["count"] == 37 and len(body["tokens"]) == 37
    assert body["max_model_len"] == 32768


def test_tokenize_messages_matches_chat_prompt_tokens() -> None:
    messages = [{"role": "user", "content": words(20)}]
    with start_stack(fast_options()) as sim:
        _, _, tokenized = post(sim.root_url, "/tokenize", {"messages": messages})
        _, _, completion = post(
            sim.root_url, "/v1/chat/completions", {"messages": messages, "max_tokens": 2}
        )
    assert tokenized["count"] == completion["usage"]["prompt_tokens"]


def test_chat_stream_follows_vllm_event_sequence() -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "stream_options": {"include_usage": True},
    }
    with start_stack(fast_options()) as sim:
        result = stream(sim.root_url, body)
    first, *tokens, usage_event = result.events
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(tokens) == 4
    assert [t["choices"][0]["finish_reason"] for t in tokens] == [None, None, None, "length"]
    assert usage_event["choices"] == []
    assert usage_event["usage"]["completion_tokens"] == 4
    assert usage_event["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert result.done


def test_completion_stream_without_include_usage_has_no_usage_chunk() -> None:
    with start_stack(fast_options()) as sim:
        result = stream(sim.root_url, {"prompt": "a b c", "max_tokens": 3}, "/v1/completions")
    assert [e["object"] for e in result.events] == ["text_completion"] * 3
    assert result.usage is None and result.done


def test_non_streamed_chat_returns_max_tokens_words() -> None:
    with start_stack(fast_options()) as sim:
        status, _, body = post(
            sim.root_url,
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "ignore_eos": True},
        )
    assert status == 200
    assert body["object"] == "chat.completion"
    assert len(body["choices"][0]["message"]["content"].split()) == 7
    assert body["usage"]["completion_tokens"] == 7


def test_prompt_longer_than_context_is_rejected_with_400() -> None:
    options = fast_options(cost=CostModel(max_model_len=64))
    with start_stack(options) as sim:
        status, _, body = post(
            sim.root_url, "/v1/completions", {"prompt": words(60), "max_tokens": 8}
        )
    assert status == 400
    assert "maximum context length is 64" in body["error"]["message"]


def test_unknown_model_is_rejected_with_404() -> None:
    with start_stack(fast_options()) as sim:
        status, _, _ = post(sim.root_url, "/v1/completions", {"model": "other", "prompt": "a"})
    assert status == 404


def test_repeated_prefix_lowers_ttft_in_proportion_to_cached_share() -> None:
    cost = CostModel(prefill_base_ms=2.0, prefill_ms_per_token=0.5, decode_base_ms=1.0)
    shared = words(320, "shared")
    body = {"max_tokens": 2, "stream_options": {"include_usage": True}}
    with start_stack(fast_options(cost=cost)) as sim:
        miss = stream(sim.root_url, {**body, "prompt": shared + " " + words(80, "a")},
                      "/v1/completions")  # fmt: skip
        hit = stream(sim.root_url, {**body, "prompt": shared + " " + words(80, "b")},
                     "/v1/completions")  # fmt: skip
    assert hit.usage["prompt_tokens_details"]["cached_tokens"] == 320
    # 400 uncached tokens, then 80: 2 + 0.5 ms each. Sleeps end late, never early, so
    # the lower bounds are tight; the upper ones only tell the hit from the miss, since a
    # busy machine can wake any sleep late by tens of milliseconds.
    miss_s, hit_s = (float(r.headers["x-sim-prefill-ms"]) / 1000 for r in (miss, hit))
    assert 0.200 < miss_s < 0.400
    assert 0.040 < hit_s < 0.200
    for result, prefill_s in ((miss, miss_s), (hit, hit_s)):
        assert prefill_s <= result.ttft_s < prefill_s + 0.150


def test_cache_capacity_evicts_least_recently_used_prefix() -> None:
    cost = CostModel(prefill_ms_per_token=0.0, decode_base_ms=0.5, cache_blocks=20)
    first, second = words(321, "first"), words(321, "second")

    def cached(prompt: str) -> int:
        _, _, body = post(sim.root_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
        return body["usage"]["prompt_tokens_details"]["cached_tokens"]

    with start_stack(fast_options(cost=cost)) as sim:
        assert cached(first) == 0
        assert cached(first) == 320
        assert cached(second) == 0  # fills the cache: the first prompt's blocks go
        assert cached(first) == 0


def _concurrent_tpots(root_url: str, count: int, max_tokens: int) -> list[float]:
    results: list[float] = []

    def one(index: int) -> None:
        result = stream(root_url, {"prompt": f"p{index}", "max_tokens": max_tokens},
                        "/v1/completions")  # fmt: skip
        results.append(result.tpot_s)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_decode_slows_with_batch_size() -> None:
    cost = CostModel(
        prefill_base_ms=0.0,
        prefill_ms_per_token=0.0,
        decode_base_ms=4.0,
        decode_ms_per_seq=1.0,
        prefill_interference_ms=0.0,
        prefill_concurrency=64,
    )
    with start_stack(fast_options(cost=cost)) as sim:
        alone = _concurrent_tpots(sim.root_url, 1, 20)[0]
        batch = _concurrent_tpots(sim.root_url, 24, 20)
    assert 0.0035 < alone < 0.008
    # 24 running: 4 ms + 23 x 1 ms = 27 ms while all of them run.
    assert 0.018 < sorted(batch)[len(batch) // 2] < 0.040


def test_requests_beyond_max_num_seqs_wait_in_the_queue() -> None:
    cost = CostModel(prefill_base_ms=0.0, prefill_ms_per_token=0.0, decode_base_ms=10.0,
                     decode_ms_per_seq=0.0, max_num_seqs=2)  # fmt: skip
    queued: list[float] = []
    with start_stack(fast_options(cost=cost)) as sim:

        def one(index: int) -> None:
            result = stream(sim.root_url, {"prompt": f"q{index}", "max_tokens": 10},
                            "/v1/completions")  # fmt: skip
            queued.append(float(result.headers["x-sim-queue-ms"]))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    queued.sort()
    assert queued[1] < 50 and queued[2] > 60  # two ran at once, two waited ~100 ms


def test_waiting_gauge_shows_queued_requests() -> None:
    cost = CostModel(decode_base_ms=100.0, max_num_seqs=1, prefill_ms_per_token=0.0)
    with start_stack(fast_options(cost=cost)) as sim:
        threads = [
            threading.Thread(
                target=post,
                args=(sim.root_url, "/v1/completions", {"prompt": "x", "max_tokens": 3}),
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        waiting = 0.0
        while time.monotonic() < deadline and waiting < 2:
            waiting = metric_value(scrape(sim.metrics_urls["server"]), "vllm:num_requests_waiting")
        for thread in threads:
            thread.join()
    assert waiting == 2


def test_metrics_counters_match_requests_sent() -> None:
    prompts = [words(n, f"len{n}-") for n in (10, 40, 70)]
    with start_stack(fast_options()) as sim:
        for prompt in prompts:
            post(sim.root_url, "/v1/completions", {"prompt": prompt, "max_tokens": 5})
        stream(sim.root_url, {"prompt": prompts[2], "max_tokens": 6}, "/v1/completions")
        text = scrape(sim.metrics_urls["server"])
    assert metric_value(text, "vllm:prompt_tokens_total") == 10 + 40 + 70 + 70
    assert metric_value(text, "vllm:generation_tokens_total") == 5 * 3 + 6
    assert metric_value(text, "vllm:request_success_total", finished_reason="length") == 4
    assert metric_value(text, "vllm:prefix_cache_queries_total") == 190
    assert metric_value(text, "vllm:prefix_cache_hits_total") == 64  # 4 blocks of prompt 3
    assert metric_value(text, "vllm:time_to_first_token_seconds_count") == 4
    assert metric_value(text, "vllm:request_prefill_time_seconds_count") == 4
    assert metric_value(text, "vllm:request_decode_time_seconds_count") == 4
    assert metric_value(text, "vllm:num_requests_running") == 0
    assert metric_value(text, "kvswarm_sim_requests_total", outcome="ok") == 4


def test_ground_truth_brackets_client_timings(tmp_path: Path) -> None:
    log = tmp_path / "truth.jsonl"
    with start_stack(fast_options(ground_truth=str(log))) as sim:
        result = stream(sim.root_url, {"prompt": words(30), "max_tokens": 5},
                        "/v1/completions", headers={"X-Request-Id": "req-1"})  # fmt: skip
    (record,) = read_ground_truth(log)
    assert record["request_id"] == "req-1"
    assert result.started_s <= record["receipt_s"] <= record["first_token_s"]
    # Stamped when the write returned (the client may read the bytes a moment before);
    # one clock for both, so they differ by scheduling noise, not by clock offsets.
    assert abs(record["first_token_s"] - result.text_times_s[0]) < 0.050
    assert abs(record["last_token_s"] - result.text_times_s[-1]) < 0.050
    assert (record["prompt_tokens"], record["output_tokens"], record["fault"]) == (30, 5, None)


def test_response_headers_carry_phase_timings() -> None:
    cost = CostModel(prefill_base_ms=30.0, prefill_ms_per_token=0.0, decode_base_ms=1.0)
    with start_stack(fast_options(cost=cost)) as sim:
        status, headers, _ = post(sim.root_url, "/v1/completions", {"prompt": "a", "max_tokens": 3})
    assert status == 200
    assert 29 <= float(headers["x-sim-prefill-ms"]) < 80
    assert float(headers["x-sim-transfer-ms"]) == 0
    assert float(headers["x-sim-decode-ms"]) >= 2
