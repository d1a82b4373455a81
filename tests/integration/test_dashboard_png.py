"""The committed dashboard drawn from a real Prometheus scraping kvswarm's exporter: every
query, variables expanded, is one that Prometheus's query_range accepts; the load panels
get kvswarm's series, named by their legends; the PNG is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvswarm.records import RequestRecord
from kvswarm.sinks import Exporter
from kvswarm.sinks.dashboard_png import (
    DEFAULT_DASHBOARD,
    PrometheusRange,
    TimeRange,
    dashboard_layout,
    fetch_panels,
    main,
)
from tests.support.processes import free_port
from tests.support.prometheus import needs_prometheus, prometheus_config, start_prometheus


def record(number: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{number}", worker_id="w", user_id=1, scenario="chat", mode="pd",
        endpoint="chat", streamed=True, start_unix_s=0.0, ok=True, output_tokens=3,
        prompt_tokens=100, cached_tokens=64, ttft_s=0.05 * (1 + number % 4), tpot_s=0.01,
        e2e_s=0.3, itl_s=(0.01, 0.01),
    )  # fmt: skip


@needs_prometheus
def test_the_committed_dashboard_draws_from_a_real_prometheus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exporter = Exporter(mode="pd")
    port = free_port()
    exporter.serve("127.0.0.1", port)
    config = prometheus_config({"kvswarm": [f"127.0.0.1:{port}"]})
    try:
        with start_prometheus(tmp_path, config) as prometheus:
            # Two scrapes with different counts, so rate() has something to show.
            for batch in (range(10), range(10, 30)):
                for number in batch:
                    exporter.add(record(number))
                total = batch.stop
                prometheus.wait_for("sum(kvswarm_requests_total)", lambda v: v == total)  # noqa: B023
            board = json.loads(DEFAULT_DASHBOARD.read_text())
            when = TimeRange.last(30, points=30)
            panels = fetch_panels(dashboard_layout(board), PrometheusRange(prometheus.url), when)
            assert not [error for panel in panels for error in panel.errors]
            ttft = next(panel for panel in panels if panel.layout.title == "TTFT")
            assert {series.name for series in ttft.series} == {"p50 chat pd", "p90 chat pd",
                                                               "p99 chat pd"}  # fmt: skip
            out = tmp_path / "dashboard.png"
            capsys.readouterr()
            assert main(["--prometheus", prometheus.url, "--out", str(out), "--last", "30s"]) == 0
            assert capsys.readouterr().err == ""  # no query refused
            assert out.read_bytes()[:4] == b"\x89PNG"
    finally:
        exporter.close()


def test_an_unreachable_prometheus_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--prometheus", url, "--out", str(tmp_path / "x.png")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"kvswarm: cannot reach Prometheus: {url}/api/v1/query_range")
