"""Records on disk and the summary computed back from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kvswarm.analysis.runs import load_run
from kvswarm.analysis.summary import format_summary, summarize
from kvswarm.records import (
    CSV_COLUMNS,
    RecordWriter,
    RequestRecord,
    record_from_dict,
    record_to_dict,
    to_row,
)


def make(i: int, scenario: str = "s", **fields) -> RequestRecord:
    base = dict(
        request_id=f"w-1-{i}",
        worker_id="w",
        user_id=1,
        scenario=scenario,
        mode="non_disaggregated",
        endpoint="chat",
        streamed=True,
        start_unix_s=1000.0 + i,
        ok=True,
        output_tokens=4,
        output_tokens_source="usage",
        text_chunks=4,
        ttft_s=0.010 * (i + 1),
        e2e_s=0.010 * (i + 1) + 0.03,
        tpot_s=0.01,
        itl_s=(0.009, 0.010, 0.011 + i / 1000),
    )
    base.update(fields)
    return RequestRecord(**base)


def write_run(tmp_path: Path, records: list[RequestRecord], window_s: float = 10.0) -> Path:
    writer = RecordWriter(tmp_path / "requests.csv")
    writer.extend(records)
    writer.close()
    meta = {"window": {"start_unix_s": 100.0, "end_unix_s": 100.0 + window_s}}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    return tmp_path


def test_row_has_a_cell_for_every_column() -> None:
    assert len(to_row(make(0))) == len(CSV_COLUMNS)


def test_record_survives_shipping_as_plain_data() -> None:
    record = make(3, cached_tokens=5, failure="", prefix_id="doc-1")
    assert record_from_dict(record_to_dict(record)) == record


def test_summary_percentiles_are_exact_over_every_value(tmp_path: Path) -> None:
    records = [make(i) for i in range(101)]
    run = load_run(write_run(tmp_path, records))
    (summary,) = summarize(run)
    ttfts = np.array([r.ttft_s * 1000 for r in records])
    itls = np.array([gap * 1000 for r in records for gap in r.itl_s])
    for p in (50, 90, 99):
        assert summary.latency["ttft"][p] == pytest.approx(np.percentile(ttfts, p), abs=1e-3)
        assert summary.latency["itl"][p] == pytest.approx(np.percentile(itls, p), abs=1e-3)
    assert summary.requests_per_s == pytest.approx(10.1)
    assert summary.output_tokens_per_s == pytest.approx(40.4)


def test_failures_are_counted_by_category_and_cancelled_apart(tmp_path: Path) -> None:
    records = [
        make(0),
        make(1, ok=False, failure="http_503", ttft_s=None, itl_s=()),
        make(2, ok=False, failure="disconnect"),
        make(3, ok=False, failure="disconnect"),
        make(4, ok=False, failure="cancelled", ttft_s=None, e2e_s=None, itl_s=()),
    ]
    (summary,) = summarize(load_run(write_run(tmp_path, records)))
    assert summary.failures == {"disconnect": 2, "http_503": 1}
    assert (summary.requests, summary.ok, summary.cancelled) == (4, 1, 1)
    # latencies come from successful requests only
    assert summary.latency["ttft"][50] == pytest.approx(10.0)


def test_several_scenarios_get_their_own_rows_and_a_total(tmp_path: Path) -> None:
    records = [make(0, "a"), make(1, "b"), make(2, "b")]
    summaries = summarize(load_run(write_run(tmp_path, records)))
    assert [(s.scenario, s.requests) for s in summaries] == [("a", 1), ("b", 2), ("all", 3)]
    text = format_summary(summaries, "results/x")
    assert "b: 2 requests, 2 ok, failures: none" in text
    assert text.rstrip().endswith("results: results/x")


def test_writer_appends_to_an_existing_file_without_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    for i in range(2):
        writer = RecordWriter(path)
        writer.append(make(i))
        writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("request_id,")


def test_summary_puts_the_server_cached_share_next_to_the_designed_reuse(tmp_path: Path) -> None:
    records = [
        make(0, expected_hit=True, prompt_tokens=100, cached_tokens=80),
        make(1, expected_hit=False, prompt_tokens=100, cached_tokens=0),
    ]
    (summary,) = summarize(load_run(write_run(tmp_path, records)))
    assert summary.designed_hit_share == pytest.approx(0.5)
    assert summary.cached_share == pytest.approx(0.4)
    text = format_summary([summary], "r")
    assert "designed hits 50% of requests; server-reported cached 40% of prompt tokens" in text


def test_warm_up_requests_are_left_out_of_throughput_and_percentiles(tmp_path: Path) -> None:
    # The window is 1000-1010 s (start_unix_s = 1000 + i); the first 4 s are warm-up.
    records = [make(i, start_unix_s=1000.0 + i) for i in range(10)]
    write_run(tmp_path, records)
    meta = {"window": {"start_unix_s": 1000.0, "end_unix_s": 1010.0, "warmup_s": 4.0}}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (summary,) = summarize(load_run(tmp_path))
    assert summary.requests == 6
    assert summary.requests_per_s == pytest.approx(1.0)
    assert summary.latency["ttft"][50] == pytest.approx(
        np.percentile([50, 60, 70, 80, 90, 100], 50)
    )


def test_goodput_counts_requests_within_the_runs_slos(tmp_path: Path) -> None:
    # TTFTs are 10, 20, ... ms; an SLO of 35 ms admits three of them.
    records = [make(i) for i in range(6)]
    write_run(tmp_path, records, window_s=3.0)
    meta = json.loads((tmp_path / "run.json").read_text())
    meta["config"] = {"slo": {"ttft_ms": 35.0, "tpot_ms": 100.0}}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (summary,) = summarize(load_run(tmp_path))
    assert summary.goodput_per_s == pytest.approx(1.0)
    assert "goodput 1.00 req/s within the SLOs" in format_summary([summary], "r")


def test_summary_shows_configured_designed_and_server_reported_reuse_side_by_side(
    tmp_path: Path,
) -> None:
    from kvswarm.metrics_sources import ServerReport
    from kvswarm.runrecord import RunRecord, Window, write_run_record
    from kvswarm.tokens import LengthSummary
    from kvswarm.workloads import WorkloadSummary

    records = [
        make(0, expected_hit=True, prompt_tokens=100, cached_tokens=90),
        make(1, expected_hit=True, prompt_tokens=100, cached_tokens=90),
        make(2, expected_hit=False, prompt_tokens=100, cached_tokens=0),
    ]
    write_run(tmp_path, records)
    lengths = LengthSummary(3, 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    record = RunRecord(
        run_id="r",
        status="interrupted",
        status_reason="SIGTERM received before the test ended",
        window=Window(100.0, 110.0),
        workloads={"s": WorkloadSummary("s", "batch_processing", 3, 2, 0.95, 2 / 3, lengths)},
        server=ServerReport(
            engine="sim",
            cached_share=0.55,
            cached_share_formula="prefix_cache_hits / prefix_cache_queries",
            kv_store="mooncake",
        ),
    )
    write_run_record(tmp_path, record)
    run = load_run(tmp_path)
    text = format_summary(summarize(run), "r", run)
    assert (
        "reuse configured 95%, designed hits 67% of requests; "
        "server-reported cached 60% of prompt tokens"
    ) in text
    assert "cached share 55% (prefix_cache_hits / prefix_cache_queries); KV store: mooncake" in text
    assert "run interrupted: SIGTERM received before the test ended" in text


def test_run_record_round_trips_through_run_json(tmp_path: Path) -> None:
    from kvswarm.metrics_sources import ServerReport, SourceReport
    from kvswarm.runrecord import (
        FleetSection,
        RunRecord,
        WorkerShipment,
        read_run_record,
        write_run_record,
    )

    record = RunRecord(
        run_id="r",
        fleet=FleetSection(True, {"w1": WorkerShipment(5, True)}, ("w2",), 1),
        server=ServerReport(engine="vllm", sources={"target": SourceReport("http://x/metrics")}),
        argv=("locust", "-f", "x"),
    )
    write_run_record(tmp_path, record)
    assert read_run_record(tmp_path) == record


def test_a_newer_run_json_is_refused_in_one_line(tmp_path: Path) -> None:
    from kvswarm.errors import KvswarmError
    from kvswarm.runrecord import read_run_record

    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 99, "run_id": "r"}))
    with pytest.raises(KvswarmError, match="schema_version 99 is newer"):
        read_run_record(tmp_path)
