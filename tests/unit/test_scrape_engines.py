"""Server metrics: parsing Prometheus text, window deltas, engine recognition."""

from __future__ import annotations

import pytest

from kvswarm.engines import ENGINES, cached_share, engine_from_metrics, server_root
from kvswarm.scrape import parse_metrics, window_report

VLLM_START = """
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 200.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 5.0
vllm:time_to_first_token_seconds_count{model_name="m"} 5.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.7
"""
VLLM_END = (
    VLLM_START.replace("1000.0", "3000.0")
    .replace("200.0", "1800.0")
    .replace("} 3.0", "} 0.0")
    .replace('_count{model_name="m"} 5.0', '_count{model_name="m"} 9.0')
)


def test_counter_deltas_over_the_window() -> None:
    report = window_report(parse_metrics(VLLM_START, "u"), parse_metrics(VLLM_END, "u"))
    deltas = report["deltas"]
    assert deltas['vllm:prefix_cache_queries_total{engine="0",model_name="m"}'] == 2000.0
    assert deltas['vllm:prefix_cache_hits_total{engine="0",model_name="m"}'] == 1600.0
    assert deltas['vllm:time_to_first_token_seconds_count{model_name="m"}'] == 4.0
    # gauges are reported as their end value, not as a delta
    assert report["end"]['vllm:num_requests_running{engine="0",model_name="m"}'] == 0.0
    assert not any("num_requests_running" in key for key in deltas)


def test_value_sums_matching_samples_across_labels() -> None:
    snapshot = parse_metrics(VLLM_START)
    assert snapshot.value("vllm:prefix_cache_queries_total") == 1000.0
    assert snapshot.value("vllm:prefix_cache_queries_total", engine="1") is None


def test_unreachable_endpoint_is_a_warning_not_an_error() -> None:
    from kvswarm.scrape import scrape

    snapshot = scrape("http://127.0.0.1:1/metrics", timeout_s=1)
    assert not snapshot.ok and "cannot read" in snapshot.error
    report = window_report(snapshot, snapshot)
    assert "warning" in report and "deltas" not in report


def test_cached_share_from_vllm_prefix_cache_counters() -> None:
    report = window_report(parse_metrics(VLLM_START), parse_metrics(VLLM_END))
    deltas = {key.partition("{")[0]: value for key, value in report["deltas"].items()}
    assert cached_share(ENGINES["vllm"], deltas) == pytest.approx(0.8)


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


@pytest.mark.parametrize(
    ("base", "root"),
    [
        ("http://h:8000/v1", "http://h:8000"),
        ("http://h:8000/v1/", "http://h:8000"),
        ("http://h:8000", "http://h:8000"),
        ("https://h/api/v1", "https://h/api"),
    ],
)
def test_server_root_drops_v1(base: str, root: str) -> None:
    assert server_root(base) == root
