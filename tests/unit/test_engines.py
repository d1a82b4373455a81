"""Engine profiles: registry, cached-share formulas, per-request timings, context errors."""

from __future__ import annotations

import pytest

from kvswarm.client import StreamResult
from kvswarm.engines import (
    ENGINES,
    LLAMA_CPP,
    OPENAI,
    SGLANG,
    SIM,
    VLLM,
    RequestTimings,
    engine_from_metrics,
    engine_profile,
)
from kvswarm.metrics_sources import parse_metrics


def test_every_engine_has_one_profile_registered_by_name() -> None:
    assert set(ENGINES) == {"vllm", "sim", "llama.cpp", "sglang", "openai"}
    for name, profile in ENGINES.items():
        assert profile.name == name
        assert engine_profile(name) is profile


def test_an_unknown_engine_name_is_a_value_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: llama.cpp, openai, sglang, sim, vllm"):
        engine_profile("tgi")


def test_the_simulator_profile_is_vllms_with_its_own_name() -> None:
    assert SIM.metrics == VLLM.metrics
    assert SIM.tokenize == VLLM.tokenize
    assert SIM.name == "sim"


# --- cached share ---------------------------------------------------------------------------

VLLM_LABELLED = {
    'vllm:prefix_cache_queries_total{engine="0",model_name="tiny"}': 1500.0,
    'vllm:prefix_cache_queries_total{engine="1",model_name="tiny"}': 500.0,
    'vllm:prefix_cache_hits_total{engine="0",model_name="tiny"}': 1200.0,
    'vllm:prefix_cache_hits_total{engine="1",model_name="tiny"}': 400.0,
    'vllm:prompt_tokens_total{engine="0",model_name="tiny"}': 2000.0,
}


@pytest.mark.parametrize("profile", [VLLM, SIM], ids=["vllm", "sim"])
def test_cached_share_sums_labelled_counters(profile) -> None:
    share = profile.cached_share(VLLM_LABELLED)
    assert share is not None
    assert share.value == pytest.approx(0.8)
    assert share.formula == "prefix_cache_hits / prefix_cache_queries"


def test_vllm_cached_share_is_none_without_queries() -> None:
    assert VLLM.cached_share({'vllm:prefix_cache_hits_total{engine="0"}': 0.0}) is None


def test_llamacpp_cached_share_adds_cached_to_prompt_tokens() -> None:
    # llama.cpp's prompt_tokens_total excludes the cached tokens: 1360 cached of 2360.
    deltas = {
        "llamacpp:prompt_tokens_total": 1000.0,
        "llamacpp:prompt_tokens_cached_total": 1360.0,
    }
    share = LLAMA_CPP.cached_share(deltas)
    assert share is not None
    assert share.value == pytest.approx(1360 / 2360)
    assert 0.57 < share.value < 0.58
    assert share.formula == "prompt_tokens_cached / (prompt_tokens + prompt_tokens_cached)"


def test_llamacpp_cached_share_is_none_without_prompt_tokens() -> None:
    assert LLAMA_CPP.cached_share({"llamacpp:tokens_predicted_total": 9.0}) is None


def test_sglang_cached_share_is_cached_over_prompt_tokens() -> None:
    deltas = {
        'sglang:prompt_tokens_total{model_name="m"}': 4000.0,
        'sglang:cached_tokens_total{model_name="m"}': 1000.0,
    }
    share = SGLANG.cached_share(deltas)
    assert share is not None and share.value == pytest.approx(0.25)
    assert share.formula == "cached_tokens / prompt_tokens"


def test_generic_openai_server_has_no_cached_share() -> None:
    assert OPENAI.cached_share(VLLM_LABELLED) is None


def test_vllm_external_cached_share_reads_the_connector_counters() -> None:
    deltas = {
        'vllm:external_prefix_cache_queries_total{engine="0"}': 800.0,
        'vllm:external_prefix_cache_hits_total{engine="0"}': 600.0,
    }
    share = VLLM.external_cached_share(deltas)
    assert share is not None and share.value == pytest.approx(0.75)


# --- per-request timings --------------------------------------------------------------------


def test_sim_request_timings_come_from_its_headers_and_decode_trailer() -> None:
    result = StreamResult(
        headers={
            "x-sim-queue-ms": "2.000",
            "x-sim-prefill-ms": "30.500",
            "x-sim-transfer-ms": "0.000",
            "x-sim-prompt-tokens": "400",
            "x-sim-cached-tokens": "384",
            "x-sim-decode-ms": "120.000",  # the trailer, parsed into the same headers
        }
    )
    assert SIM.request_timings(result) == RequestTimings(
        prefill_s=pytest.approx(0.0305),
        transfer_s=0.0,
        decode_s=pytest.approx(0.12),
        queue_s=pytest.approx(0.002),
        prompt_tokens=400,
        cached_tokens=384,
    )


def test_sim_request_timings_without_headers_are_all_none() -> None:
    assert SIM.request_timings(StreamResult()) == RequestTimings()


def test_llamacpp_request_timings_come_from_its_timings_object() -> None:
    result = StreamResult(
        server_timings={"prompt_n": 12, "cache_n": 100, "prompt_ms": 48.0, "predicted_ms": 90.0}
    )
    timings = LLAMA_CPP.request_timings(result)
    assert timings.prefill_s == pytest.approx(0.048)
    assert timings.decode_s == pytest.approx(0.09)
    assert timings.prompt_tokens == 112
    assert timings.cached_tokens == 100
    assert timings.queue_s is None and timings.transfer_s is None


def test_llamacpp_request_timings_without_timings_are_all_none() -> None:
    assert LLAMA_CPP.request_timings(StreamResult()) == RequestTimings()


def test_vllm_reports_no_per_request_timings() -> None:
    result = StreamResult(headers={"x-sim-prefill-ms": "30"}, server_timings={"prompt_ms": 1})
    assert VLLM.request_timings(result) == RequestTimings()


# --- context-length errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (VLLM, "This model's maximum context length is 4096 tokens. However, you requested "
               "5000 tokens (4992 in the messages, 8 in the completion)."),
        (VLLM, "The decoder prompt (length 5000) is longer than the maximum model length of "
               "4096. Make sure that `max_model_len` is no smaller than the number of text "
               "tokens."),
        (SIM, "This model's maximum context length is 256 tokens. However, you requested 1008"),
        (LLAMA_CPP, "the request exceeds the available context size, try increasing it"),
        (SGLANG, "The input (5000 tokens) is longer than the model's context length (4096 "
                 "tokens)."),
        (OPENAI, "prompt is too long"),
    ],
)  # fmt: skip
def test_context_length_rejections_are_recognised(profile, message: str) -> None:
    assert profile.is_context_error(400, message)


def test_a_context_wording_with_another_status_is_not_a_context_error() -> None:
    assert not VLLM.is_context_error(500, "maximum context length is 4096 tokens")


def test_an_unrelated_bad_request_is_not_a_context_error() -> None:
    assert not VLLM.is_context_error(400, "The model `other` does not exist.")


# --- recognising engines and KV stores ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "engine"),
    [
        ("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n", "vllm"),
        (
            "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 0\n",
            "llama.cpp",
        ),
        ("# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 0\n", "sglang"),
        (
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n"
            "# TYPE kvswarm_sim_faults_injected counter\nkvswarm_sim_faults_injected_total 0\n",
            "sim",
        ),
    ],
)
def test_engine_is_recognised_by_its_metric_names(text: str, engine: str) -> None:
    assert engine_from_metrics(parse_metrics(text)) == engine


def _sim_info(store: str):
    return parse_metrics(
        "# TYPE kvswarm_sim_info gauge\n"
        f'kvswarm_sim_info{{kv_store="{store}",mode="pd_disaggregated",model_name="m"}} 1.0\n'
    )


@pytest.mark.parametrize(
    ("store", "reported"), [("mooncake", "mooncake"), ("memory", "in-process")]
)
def test_sim_names_the_kv_store_from_its_info_gauge(store: str, reported: str) -> None:
    assert SIM.kv_store({"target": _sim_info(store)}) == reported


def test_engines_without_a_kv_store_gauge_name_none() -> None:
    assert VLLM.kv_store({"target": _sim_info("mooncake")}) is None
