"""The live charts' data: per scenario and interval, percentiles, tokens/s, cached share."""

from __future__ import annotations

import numpy as np
import pytest

from kvswarm.locust.timeline import SETTLE_S, LiveTimeline
from kvswarm.records import RequestRecord

START = 1_000.0


def record(ended: float, ttft_ms: float, *, scenario: str = "s", ok: bool = True,
           cached: int | None = None, tokens: int = 10) -> RequestRecord:  # fmt: skip
    e2e = 0.5
    return RequestRecord(
        request_id=f"r-{ended}-{ttft_ms}", worker_id="w", user_id=1, scenario=scenario,
        mode="non_disaggregated", endpoint="chat", streamed=True,
        start_unix_s=START + ended - e2e, ok=ok, output_tokens=tokens,
        ttft_s=ttft_ms / 1000, e2e_s=e2e, tpot_s=ttft_ms / 10_000,
        prompt_tokens=100 if cached is not None else None, cached_tokens=cached,
        failure="" if ok else "http_500",
    )  # fmt: skip


def test_requests_are_charted_in_the_interval_they_ended_in() -> None:
    timeline = LiveTimeline(START, interval_s=2.0)
    for i in range(100):
        timeline.add(record(0.5 + i / 100, ttft_ms=10 + i))  # all end in [0, 2)
    timeline.add(record(2.5, ttft_ms=500, cached=40))  # ends in [2, 4)
    (first, second) = timeline.points(now_unix_s=START + 4 + SETTLE_S)["series"]["s"]
    assert (first["t"], first["requests"], second["t"], second["requests"]) == (2.0, 100, 4.0, 1)
    values = np.arange(10, 110)
    assert first["ttft_p50_ms"] == pytest.approx(
        np.percentile(values, 50, method="inverted_cdf"), rel=1e-3
    )
    assert first["ttft_p99_ms"] == pytest.approx(
        np.percentile(values, 99, method="inverted_cdf"), rel=1e-3
    )
    assert first["output_tokens_per_s"] == 100 * 10 / 2.0
    assert (first["cached_share"], second["cached_share"]) == (None, 0.4)


def test_an_interval_is_charted_once_it_has_settled() -> None:
    timeline = LiveTimeline(START, interval_s=2.0)
    timeline.add(record(1.0, ttft_ms=10))
    assert timeline.points(now_unix_s=START + 2.0)["series"] == {}
    assert len(timeline.points(now_unix_s=START + 2.0 + SETTLE_S)["series"]["s"]) == 1


def test_failed_requests_are_left_out_and_scenarios_kept_apart() -> None:
    timeline = LiveTimeline(START, interval_s=2.0)
    timeline.add(record(1.0, ttft_ms=10, scenario="a"))
    timeline.add(record(1.0, ttft_ms=99, scenario="b"))
    timeline.add(record(1.0, ttft_ms=5000, scenario="a", ok=False))
    series = timeline.points(now_unix_s=START + 10)["series"]
    assert series["a"][0]["requests"] == 1
    assert series["a"][0]["ttft_p99_ms"] == pytest.approx(10, rel=1e-3)
    assert series["b"][0]["ttft_p50_ms"] == pytest.approx(99, rel=1e-3)


def test_only_the_newest_intervals_are_kept() -> None:
    timeline = LiveTimeline(START, interval_s=1.0, max_points=5)
    for second in range(20):
        timeline.add(record(second + 0.5, ttft_ms=10))
    kept = timeline.points(now_unix_s=START + 100)["series"]["s"]
    assert [p["t"] for p in kept] == [16.0, 17.0, 18.0, 19.0, 20.0]
    timeline.add(record(2.5, ttft_ms=10))  # a late record for a dropped interval: ignored
    assert len(timeline.points(now_unix_s=START + 100)["series"]["s"]) == 5
