"""The PD-disaggregated stack with the in-process KV store: proxy, prefiller, decoder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvswarm.sim import CostModel, start_stack
from kvswarm.sim.stack import RunningStack
from tests.integration.test_sim_http import (
    fast_options,
    metric_value,
    post,
    scrape,
    stream,
    words,
)

# 400 uncached prompt tokens: prefill 2 + 400 x 0.25 = 102 ms; transfer of 400 tokens at
# 250 kB/token over 1 GB/s = 100 ms (+1 ms base); one decode step 5 ms.
PD_COST = CostModel(
    prefill_base_ms=2.0,
    prefill_ms_per_token=0.25,
    decode_base_ms=5.0,
    decode_ms_per_seq=0.0,
    prefill_interference_ms=0.0,
    kv_bytes_per_token=250_000,
    kv_bandwidth_gb_s=1.0,
    kv_transfer_base_ms=1.0,
)


@pytest.fixture
def pd() -> Iterator[RunningStack]:
    options = fast_options(mode="pd_disaggregated", cost=PD_COST, kv_store="memory")
    with start_stack(options) as stack:
        yield stack


def test_pd_stack_exposes_proxy_prefiller_and_decoder_metrics(pd: RunningStack) -> None:
    assert set(pd.metrics_urls) == {"proxy", "prefiller", "decoder"}
    assert "kvswarm_sim_info" in scrape(pd.metrics_urls["proxy"])
    assert "vllm:prefix_cache_queries_total" in scrape(pd.metrics_urls["decoder"])


def test_pd_ttft_includes_prefill_transfer_and_first_decode_step(pd: RunningStack) -> None:
    result = stream(pd.root_url, {"prompt": words(400), "max_tokens": 3}, "/v1/completions")
    prefill_s = float(result.headers["x-sim-prefill-ms"]) / 1000
    transfer_s = float(result.headers["x-sim-transfer-ms"]) / 1000
    # Sleeps end late, never early: tight below, loose above (a busy machine wakes any
    # sleep late by tens of milliseconds; the upper bounds catch a cost counted twice).
    assert 0.100 < prefill_s < 0.200
    assert 0.099 < transfer_s < 0.200
    assert result.ttft_s >= prefill_s + transfer_s + 0.004
    assert result.ttft_s < prefill_s + transfer_s + 0.150


def test_pd_decoder_cache_shrinks_the_transfer_of_a_repeated_prefix(pd: RunningStack) -> None:
    shared = words(320, "doc")
    first = stream(pd.root_url, {"prompt": shared + " " + words(80, "a"), "max_tokens": 2},
                   "/v1/completions")  # fmt: skip
    second = stream(pd.root_url, {"prompt": shared + " " + words(80, "b"), "max_tokens": 2},
                    "/v1/completions")  # fmt: skip
    # 80 tokens to move the second time: 80 x 250 kB / 1 GB/s = 20 ms (+1 ms).
    assert float(first.headers["x-sim-transfer-ms"]) > 90
    assert float(second.headers["x-sim-transfer-ms"]) < 60


def test_pd_reports_the_prefillers_cached_tokens(pd: RunningStack) -> None:
    prompt = words(200, "same")
    post(pd.root_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
    _, _, body = post(pd.root_url, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 192


def test_pd_counts_prefill_on_prefiller_and_decode_on_decoder(pd: RunningStack) -> None:
    for index in range(3):
        post(pd.root_url, "/v1/completions", {"prompt": words(50, f"r{index}"), "max_tokens": 4})
    prefiller = scrape(pd.metrics_urls["prefiller"])
    decoder = scrape(pd.metrics_urls["decoder"])
    proxy = scrape(pd.metrics_urls["proxy"])
    assert metric_value(prefiller, "vllm:prompt_tokens_total") == 150
    assert metric_value(prefiller, "vllm:generation_tokens_total") == 3  # one token each
    assert metric_value(decoder, "vllm:generation_tokens_total") == 12
    assert metric_value(proxy, "kvswarm_sim_kv_transfer_seconds_count") == 3
    assert metric_value(proxy, "kvswarm_sim_kv_store_operations_total", op="put", result="ok") == 3
    assert metric_value(proxy, "kvswarm_sim_kv_store_operations_total", op="get", result="ok") == 3


def test_pd_instances_answer_direct_requests(pd: RunningStack) -> None:
    decoder_root = pd.metrics_urls["decoder"].removesuffix("/metrics")
    status, _, body = post(decoder_root, "/v1/completions", {"prompt": "a b", "max_tokens": 2})
    assert status == 200 and body["usage"]["completion_tokens"] == 2
