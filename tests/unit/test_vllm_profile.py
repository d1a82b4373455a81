"""The vLLM profile's pure parts: model check wording, block size, designed-hit ceiling."""

from __future__ import annotations

from kvswarm.engines import VLLM, engine_profile
from kvswarm.engines.vllm import ServedModel, cacheable_tokens, model_mismatch
from kvswarm.metrics_sources.snapshot import parse_metrics

TINY = (ServedModel("tiny", 4096, "/models/tiny"),)
URL = "http://127.0.0.1:8000/v1"

METRICS = """\
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",enable_prefix_caching="True",engine="0"} 1.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 1536.0
"""


def test_served_model_is_no_problem() -> None:
    assert model_mismatch(TINY, "tiny", URL) is None


def test_mismatch_names_both_models_and_the_fix_in_one_line() -> None:
    problem = model_mismatch(TINY, "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", URL)
    assert problem == (
        "target.model is 'Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4' but "
        "http://127.0.0.1:8000/v1/models serves 'tiny'; set target.model: tiny "
        "(or point target.base_url at a server of 'Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4')"
    )


def test_mismatch_with_several_models_lists_them_all() -> None:
    served = (ServedModel("a", 4096), ServedModel("b", 8192))
    problem = model_mismatch(served, "c", URL)
    assert problem is not None and "serves 'a', 'b'; set target.model (or" in problem


def test_block_size_is_read_from_cache_config_info() -> None:
    snapshot = parse_metrics(METRICS, "http://x/metrics")
    assert VLLM.block_size(snapshot) == 128
    assert VLLM.block_size(snapshot.samples) == 128
    assert VLLM.block_size(snapshot.gauges()) == 128  # a SourceReport's `end`


def test_block_size_is_none_without_the_gauge() -> None:
    assert VLLM.block_size(parse_metrics("up 1\n", "http://x/metrics")) is None
    assert VLLM.block_size(None) is None


def test_cache_semantics_name_the_servers_block_size() -> None:
    snapshot = parse_metrics(METRICS, "http://x/metrics")
    text = VLLM.cache_semantics_at({"target": snapshot})
    assert text.startswith(VLLM.cache_semantics)
    assert text.endswith("this server's blocks: 128 tokens")
    assert VLLM.cache_semantics_at({}) == VLLM.cache_semantics


def test_prefix_shorter_than_a_block_cannot_hit() -> None:
    assert cacheable_tokens(127, 600, 128) == 0
    assert cacheable_tokens(128, 600, 128) == 128


def test_cacheable_tokens_round_down_to_whole_blocks() -> None:
    assert cacheable_tokens(1625, 1700, 128) == 1536


def test_the_last_prompt_token_is_always_computed() -> None:
    assert cacheable_tokens(256, 256, 128) == 128  # an identical 2-block prompt hits 1
    assert cacheable_tokens(257, 257, 128) == 256


def test_prompt_tokens_cached_counter_is_named() -> None:
    assert engine_profile("vllm").metrics.cached_tokens == "vllm:prompt_tokens_cached_total"


def test_behind_the_pd_proxy_a_record_counts_the_prefillers_hit_not_the_decoders_load() -> None:
    from kvswarm.client import StreamResult
    from kvswarm.records import build_record

    result = StreamResult(
        prompt_tokens=1614,
        cached_tokens=1536,  # the decoder's usage: the KV it loaded from the store
        headers={
            "x-kvswarm-prefill-ms": "120.0",
            "x-kvswarm-transfer-ms": "30.0",
            "x-kvswarm-decode-ms": "80.0",
            "x-kvswarm-prefill-cached-tokens": "0",  # a designed miss: nothing reused
            "x-kvswarm-prefill-created-cache-tokens": "1536",  # whole blocks it computed
        },
    )
    timings = VLLM.request_timings(result)
    assert (timings.prefill_s, timings.transfer_s, timings.decode_s) == (0.12, 0.03, 0.08)
    record = build_record(
        result, timings, request_id="r", worker_id="w", user_id=1, scenario="s",
        mode="pd_disaggregated", endpoint="chat",
    )  # fmt: skip
    assert record.cached_tokens == 0 and record.prompt_tokens == 1614
    assert record.created_cache_tokens == 1536


def test_prompt_tokens_by_source_are_summed_over_engines_per_source() -> None:
    by_source = "vllm:prompt_tokens_by_source_total"
    deltas = {
        f'{by_source}{{engine="0",model_name="tiny",source="local_compute"}}': 300.0,
        f'{by_source}{{engine="1",model_name="tiny",source="local_compute"}}': 100.0,
        f'{by_source}{{engine="0",model_name="tiny",source="local_cache_hit"}}': 1536.0,
        'vllm:prompt_tokens_total{engine="0",model_name="tiny"}': 1936.0,
    }
    assert VLLM.prompt_sources(deltas) == {"local_compute": 400.0, "local_cache_hit": 1536.0}
    assert VLLM.prompt_sources({}) is None


def test_a_run_whose_metrics_show_a_mooncake_master_names_the_store() -> None:
    master = parse_metrics("# TYPE master_key_count gauge\nmaster_key_count 22\n")
    decoder = parse_metrics(
        '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 0\n'
    )
    assert VLLM.kv_store({"decoder": decoder, "mooncake_master": master}) == "mooncake"
    assert VLLM.kv_store({"decoder": decoder}) is None
