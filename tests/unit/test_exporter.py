"""kvswarm's exporter and the server-metrics window, without sockets: counters equal
requests.csv, histogram quantiles as Prometheus estimates them, mirrored families carry
their source, derived figures and the run.json section."""

from __future__ import annotations

import csv
import dataclasses
import socket
from pathlib import Path

import pytest
from locust.env import Environment
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvswarm.engines import VLLM
from kvswarm.locust.plugin import KvswarmPlugin
from kvswarm.metrics_sources import parse_metrics
from kvswarm.records import RequestRecord
from kvswarm.sinks import (
    Exporter,
    MirrorCollector,
    ServerMetricsSection,
    attach_exporter,
    exported_metrics_markdown,
)
from kvswarm.sinks.server_metrics import WindowReadings, bucket_quantile, summarize_source
from tests.support.processes import REPO


def record(i: int, **changes: object) -> RequestRecord:
    base = RequestRecord(
        request_id=f"r{i}", worker_id="w", user_id=1, scenario="s", mode="m",
        endpoint="chat", streamed=True, start_unix_s=0.0, ok=True, output_tokens=3,
        prompt_tokens=100, cached_tokens=64, ttft_s=0.05, tpot_s=0.01, e2e_s=0.07,
        itl_s=(0.01, 0.01),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def value(exporter: Exporter, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in exporter.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_counters_equal_requests_csv_at_the_end_of_a_run(tmp_path: Path) -> None:
    environment = Environment(user_classes=[])
    environment.create_local_runner()
    plugin = KvswarmPlugin.recording(environment, tmp_path)
    # Served on loopback: records feed the exporter only while something can read it.
    exporter = attach_exporter(plugin, port=free_port(), interval_s=60.0)
    run = plugin.run
    plugin.events.run_opened.fire(environment=environment, run=run)
    kinds = [
        {},
        {"scenario": "t", "expected_hit": True},
        {"ok": False, "failure": "http_503", "output_tokens": 0, "ttft_s": None},
        {"ok": False, "failure": "disconnect", "output_tokens": 2, "cached_tokens": None},
        {"ok": False, "failure": "cancelled", "prompt_tokens": None},
        {"tpot_s": None, "output_tokens": 1, "itl_s": ()},
    ]
    for i in range(60):
        plugin.recorder.report_now(record(i, **kinds[i % len(kinds)]))
    plugin.events.run_closing.fire(environment=environment, run=run)
    run.finish()
    with open(run.path / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60
    for scenario in ("s", "t"):
        mine = [row for row in rows if row["scenario"] == scenario]
        ok = [row for row in mine if row["ok"] == "1"]
        assert value(exporter, "kvswarm_requests_total", scenario=scenario, status="ok") == len(ok)
        for status, rows_of in (
            ("cancelled", [r for r in mine if r["failure"] == "cancelled"]),
            ("failed", [r for r in mine if r["ok"] == "0" and r["failure"] != "cancelled"]),
        ):
            assert value(exporter, "kvswarm_requests_total", scenario=scenario,
                         status=status) == len(rows_of)  # fmt: skip
        for column in ("prompt_tokens", "cached_tokens", "output_tokens"):
            expected = sum(int(row[column] or 0) for row in mine)
            assert value(exporter, f"kvswarm_{column}_total", scenario=scenario) == expected
        designed = sum(row["expected_hit"] == "1" for row in mine)
        assert value(exporter, "kvswarm_designed_hits_total", scenario=scenario) == designed
        for column, name in (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("itl_mean_ms", "itl")):
            expected = sum(bool(row[column]) for row in ok)
            assert value(exporter, f"kvswarm_{name}_seconds_count", scenario=scenario) == expected
    assert value(exporter, "kvswarm_failures_total", category="http_503") == 10
    assert value(exporter, "kvswarm_failures_total", category="disconnect") == 10
    exporter.close()


def test_a_new_run_starts_the_counters_from_zero_and_names_itself(tmp_path: Path) -> None:
    exporter = Exporter()
    exporter.add(record(0))
    exporter.reset({"run_id": "second", "mode": "m"}, mode="m")
    assert value(exporter, "kvswarm_requests_total") == 0
    exporter.add(record(1))
    assert value(exporter, "kvswarm_requests_total", status="ok") == 1
    assert value(exporter, "kvswarm_run_info", run_id="second") == 1


def test_itl_is_observed_once_per_request_as_its_mean_gap() -> None:
    exporter = Exporter()
    exporter.add(record(0, itl_s=(0.01, 0.02, 0.03)))
    assert value(exporter, "kvswarm_itl_seconds_count") == 1
    assert value(exporter, "kvswarm_itl_seconds_sum") == pytest.approx(0.02)


def test_load_gauges_are_read_at_scrape_time_and_a_failing_reading_is_left_out() -> None:
    from kvswarm.sinks import LoadReadings

    def broken() -> dict[str, float]:
        raise RuntimeError("no")

    exporter = Exporter(
        LoadReadings(users=lambda: {"s": 3}, workers=lambda: 2, in_flight=broken), mode="m"
    )
    assert value(exporter, "kvswarm_users", scenario="s", mode="m") == 3
    assert value(exporter, "kvswarm_workers", mode="m") == 2
    assert "kvswarm_in_flight_requests" not in generate_latest(exporter.registry).decode()


def test_mirrored_families_carry_their_source_and_merge_across_sources() -> None:
    page = (
        "# TYPE vllm:prefix_cache_hits_total counter\n"
        'vllm:prefix_cache_hits_total{engine="0"} 5\n'
        "# TYPE master_key_count gauge\n"
        'master_key_count{source="x"} 7\n'
    )
    mirror = MirrorCollector()
    mirror.update("prefiller", list(text_string_to_metric_families(page)))
    mirror.update("decoder", list(text_string_to_metric_families(page)))
    exporter = Exporter()
    exporter.registry.register(mirror)
    text = generate_latest(exporter.registry).decode()
    assert text.count("# TYPE vllm:prefix_cache_hits_total counter") == 1
    assert 'vllm:prefix_cache_hits_total{engine="0",source="prefiller"} 5.0' in text
    assert 'vllm:prefix_cache_hits_total{engine="0",source="decoder"} 5.0' in text
    assert 'master_key_count{exported_source="x",source="decoder"} 7.0' in text


def test_bucket_quantile_interpolates_as_prometheus_does() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (float("inf"), 40.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: half of (0.1, 0.2]
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.1)
    assert bucket_quantile(1.0, buckets) == pytest.approx(0.5)
    assert bucket_quantile(0.99, [(1.0, 1.0), (float("inf"), 2.0)]) == 1.0
    assert bucket_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def page(hits: float, queries: float, running: float, keys: float, puts: float, ttft: list) -> str:
    buckets = "".join(
        f'vllm:time_to_first_token_seconds_bucket{{le="{le}"}} {count}\n' for le, count in ttft
    )
    return (
        "# TYPE vllm:prefix_cache_hits_total counter\n"
        f"vllm:prefix_cache_hits_total {hits}\n"
        "# TYPE vllm:prefix_cache_queries_total counter\n"
        f"vllm:prefix_cache_queries_total {queries}\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running {running}\n"
        "# TYPE master_key_count gauge\n"
        f"master_key_count {keys}\n"
        "# TYPE master_put_start_requests_total counter\n"
        f"master_put_start_requests_total {puts}\n"
        "# TYPE vllm:time_to_first_token_seconds histogram\n"
        f"{buckets}"
        f"vllm:time_to_first_token_seconds_count {ttft[-1][1]}\n"
        f"vllm:time_to_first_token_seconds_sum {ttft[-1][1] * 0.1}\n"
    )


def test_window_figures_from_the_first_and_last_snapshot_and_every_gauge_reading() -> None:
    readings = WindowReadings("http://x/metrics")
    readings.observe(parse_metrics(page(10, 100, 1, 5, 3, [("0.1", 0), ("+Inf", 0)])))
    readings.observe(parse_metrics(page(40, 200, 9, 7, 5, [("0.1", 4), ("+Inf", 5)])))
    readings.observe(parse_metrics(page(70, 300, 2, 9, 23, [("0.1", 8), ("+Inf", 10)])))
    window = summarize_source(readings, 10.0, VLLM.metrics)
    assert window.counters["vllm:prefix_cache_hits_total"].delta == 60
    assert window.counters["vllm:prefix_cache_hits_total"].rate_per_s == 6
    running = window.gauges["vllm:num_requests_running"]
    assert (running.start, running.end, running.min, running.max) == (1, 2, 1, 9)
    ttft = window.histograms["vllm:time_to_first_token_seconds"]
    assert ttft.count == 10 and ttft.mean == pytest.approx(0.1)
    assert ttft.quantiles["p50"] == pytest.approx(0.0625)
    derived = window.derived
    assert derived["prefix_cache_hit_rate"].value == pytest.approx(0.3)
    assert "prefix_cache_hits_total" in derived["prefix_cache_hit_rate"].formula
    assert derived["mooncake_key_count_change"].value == 4
    assert derived["mooncake_put_rate_per_s"].value == pytest.approx(2.0)
    assert 'vllm:time_to_first_token_seconds_bucket{le="0.1"}' not in window.counters


def lmcache_page(requested: float, hits: float) -> str:
    """LMCache's counters as they appear on a vLLM instance's page."""
    return (
        "# TYPE lmcache:num_requested_tokens counter\n"
        f'lmcache:num_requested_tokens_total{{model_name="m",worker_id="0"}} {requested}\n'
        "# TYPE lmcache:num_hit_tokens counter\n"
        f'lmcache:num_hit_tokens_total{{model_name="m",worker_id="0"}} {hits}\n'
    )


def test_lmcaches_retrieve_hit_rate_is_derived_over_the_window() -> None:
    readings = WindowReadings("http://x/metrics")
    readings.observe(parse_metrics(lmcache_page(1000, 100)))
    readings.observe(parse_metrics(lmcache_page(3000, 1700)))
    derived = summarize_source(readings, 10.0, VLLM.metrics).derived
    assert derived["lmcache_hit_rate"].value == pytest.approx(0.8)
    assert derived["lmcache_hit_rate"].formula == (
        "Δlmcache:num_hit_tokens_total / Δlmcache:num_requested_tokens_total"
    )


def test_no_lmcache_hit_rate_where_the_page_has_no_lmcache_counters() -> None:
    readings = WindowReadings("http://x/metrics")
    readings.observe(parse_metrics(page(10, 100, 1, 5, 3, [("0.1", 0), ("+Inf", 0)])))
    readings.observe(parse_metrics(page(40, 200, 9, 7, 5, [("0.1", 4), ("+Inf", 5)])))
    assert "lmcache_hit_rate" not in summarize_source(readings, 10.0, VLLM.metrics).derived


def test_a_source_never_read_is_a_warning_not_a_failure() -> None:
    readings = WindowReadings("http://127.0.0.1:1/metrics")
    readings.observe(parse_metrics("", "http://127.0.0.1:1/metrics"))
    window = summarize_source(readings, 5.0, VLLM.metrics)
    assert window.warning and not window.counters


def test_section_round_trips_through_its_dict() -> None:
    readings = WindowReadings("http://x/metrics")
    readings.observe(parse_metrics(page(10, 100, 1, 5, 3, [("0.1", 0), ("+Inf", 0)])))
    readings.observe(parse_metrics(page(40, 200, 9, 7, 5, [("0.1", 4), ("+Inf", 5)])))
    section = ServerMetricsSection(
        interval_s=5.0, file="server_metrics.jsonl", start_unix_s=1.0, end_unix_s=11.0,
        window_s=10.0, engine="vllm",
        sources={"target": summarize_source(readings, 10.0, VLLM.metrics)}, warnings=("w",),
    )  # fmt: skip
    assert ServerMetricsSection.from_dict(section.to_dict()) == section


def test_readme_lists_every_exported_metric() -> None:
    assert exported_metrics_markdown() in (REPO / "README.md").read_text(encoding="utf-8")
