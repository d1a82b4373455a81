"""Server metrics: parsing Prometheus text, snapshots, the measurement window, the report."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from kvswarm.engines import LLAMA_CPP, VLLM
from kvswarm.metrics_sources import (
    MetricsSource,
    ScrapeSource,
    ServerReport,
    ServerWindow,
    Snapshot,
    counter_deltas,
    parse_metrics,
    sample_key,
    split_key,
)

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
QUERIES = 'vllm:prefix_cache_queries_total{engine="0",model_name="m"}'
HITS = 'vllm:prefix_cache_hits_total{engine="0",model_name="m"}'


def vllm_page(queries: float, hits: float) -> str:
    return (
        "# TYPE vllm:prefix_cache_queries counter\n"
        f'vllm:prefix_cache_queries_total{{engine="0",model_name="m"}} {queries}\n'
        "# TYPE vllm:prefix_cache_hits counter\n"
        f'vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {hits}\n'
    )


class Replay:
    """A MetricsSource that returns the given pages (or errors) in turn."""

    def __init__(self, name: str, pages: Iterable[str | Exception], url: str = "") -> None:
        self.name = name
        self.url = url or f"http://{name}/metrics"
        self._pages = list(pages)

    def snapshot(self) -> Snapshot:
        page = self._pages.pop(0)
        if isinstance(page, Exception):
            return Snapshot(url=self.url, error=f"cannot read {self.url}: {page}")
        return parse_metrics(page, self.url)


# --- snapshots and deltas -------------------------------------------------------------------


def test_counter_deltas_cover_counters_and_histogram_sums_not_gauges() -> None:
    deltas = counter_deltas(parse_metrics(VLLM_START), parse_metrics(VLLM_END))
    assert deltas[QUERIES] == 2000.0
    assert deltas[HITS] == 1600.0
    assert deltas['vllm:time_to_first_token_seconds_count{model_name="m"}'] == 4.0
    assert not any("num_requests_running" in key for key in deltas)


def test_a_counter_first_seen_mid_run_counts_from_zero() -> None:
    start = parse_metrics(vllm_page(100, 10))
    end = parse_metrics(
        vllm_page(300, 50)
        + "# TYPE vllm:request_success counter\n"
        + 'vllm:request_success_total{finished_reason="stop"} 7.0\n'
    )
    deltas = counter_deltas(start, end)
    assert deltas['vllm:request_success_total{finished_reason="stop"}'] == 7.0


def test_value_sums_matching_samples_across_labels() -> None:
    snapshot = parse_metrics(VLLM_START)
    assert snapshot.value("vllm:prefix_cache_queries_total") == 1000.0
    assert snapshot.value("vllm:prefix_cache_queries_total", engine="1") is None


def test_sample_keys_round_trip_labels_with_quotes_and_commas() -> None:
    labels = {"model_name": 'a "b", c', "engine": "0"}
    key = sample_key("x_total", labels)
    assert split_key(key) == ("x_total", labels)


def test_scrape_source_is_a_metrics_source() -> None:
    assert isinstance(ScrapeSource("target", "http://h/metrics"), MetricsSource)


# --- the window -----------------------------------------------------------------------------


def test_window_report_keeps_deltas_and_end_gauges_per_source() -> None:
    window = ServerWindow(VLLM, [Replay("target", [VLLM_START, VLLM_END])])
    report = window.close()
    target = report.sources["target"]
    assert target.deltas is not None and target.deltas[QUERIES] == 2000.0
    assert target.end is not None
    assert target.end['vllm:num_requests_running{engine="0",model_name="m"}'] == 0.0
    assert target.warning is None


def test_window_cached_share_sums_labelled_vllm_counters() -> None:
    report = ServerWindow(VLLM, [Replay("target", [VLLM_START, VLLM_END])]).close()
    assert report.cached_share == pytest.approx(0.8)
    assert report.cached_share_formula == "prefix_cache_hits / prefix_cache_queries"


def test_mark_measuring_excludes_the_warm_up_from_deltas() -> None:
    source = Replay("target", [vllm_page(0, 0), vllm_page(1000, 0), vllm_page(3000, 1000)])
    window = ServerWindow(VLLM, [source])
    window.mark_measuring()
    report = window.close()
    assert report.sources["target"].deltas[QUERIES] == 2000.0
    assert report.cached_share == pytest.approx(0.5)


def test_an_unreachable_source_is_a_warning_not_an_error() -> None:
    refused = ConnectionRefusedError("refused")
    window = ServerWindow(
        VLLM, [Replay("target", [VLLM_START, VLLM_END]), Replay("decoder", [refused, refused])]
    )
    report = window.close()
    decoder = report.sources["decoder"]
    assert decoder.warning and "cannot read" in decoder.warning
    assert decoder.deltas is None and decoder.end is None
    assert report.cached_share == pytest.approx(0.8)


def test_pd_cached_share_comes_from_the_prefiller() -> None:
    sources = [
        Replay("target", ["# TYPE kvswarm_sim_info gauge\nkvswarm_sim_info 1\n"] * 2),
        Replay("prefiller", [vllm_page(0, 0), vllm_page(1000, 600)]),
        # The decoder's local hits are not prompt reuse.
        Replay("decoder", [vllm_page(0, 0), vllm_page(1000, 900)]),
    ]
    report = ServerWindow(VLLM, sources).close()
    assert report.cached_share == pytest.approx(0.6)
    assert report.cached_share_sources == ("prefiller",)


def test_without_a_prefiller_every_source_with_the_counters_adds_up() -> None:
    sources = [
        Replay("target", [vllm_page(0, 0), vllm_page(1000, 600)]),
        Replay("replica_b", [vllm_page(0, 0), vllm_page(1000, 200)]),
    ]
    report = ServerWindow(VLLM, sources).close()
    assert report.cached_share == pytest.approx(0.4)


def test_a_source_at_the_targets_url_is_read_once() -> None:
    sources = [
        Replay("target", [vllm_page(0, 0), vllm_page(1000, 600)], url="http://p/metrics"),
        Replay("proxy", [], url="http://p/metrics"),
    ]
    report = ServerWindow(VLLM, sources).close()
    assert list(report.sources) == ["target"]
    assert report.cached_share == pytest.approx(0.6)
    assert report.warnings == ("proxy: same URL as target, read once",)


def test_llamacpp_window_uses_its_own_formula() -> None:
    page = (
        "# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total {}\n"
        "# TYPE llamacpp:prompt_tokens_cached_total counter\n"
        "llamacpp:prompt_tokens_cached_total {}\n"
    )
    source = Replay("target", [page.format(0, 0), page.format(1000, 1360)])
    report = ServerWindow(LLAMA_CPP, [source]).close()
    assert report.cached_share == pytest.approx(1360 / 2360)


# --- the report -----------------------------------------------------------------------------


def test_server_report_round_trips_through_a_dict() -> None:
    sources = [
        Replay("target", [VLLM_START, VLLM_END]),
        Replay("decoder", [OSError("down"), VLLM_END]),
    ]
    report = ServerWindow(VLLM, sources).close()
    data = report.to_dict()
    assert set(data) == {
        "engine", "cache_semantics", "cached_share", "cached_share_formula",
        "cached_share_sources", "external_cached_share", "kv_store",
        "prompt_tokens_by_source", "sources", "warnings",
    }  # fmt: skip
    assert data["sources"]["decoder"]["deltas"] is None
    assert ServerReport.from_dict(data) == report
