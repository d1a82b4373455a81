"""The live charts' data: per scenario and interval of a running test, TTFT and TPOT
p50/p99, output tokens/s and the server-reported cached share.

A `record_kept` sink of the results-owning process (on a master: every worker's records),
attached with the web UI. A record falls in the interval its request ended in (its start +
E2E, on the clock of the process that sent it), so a master that receives a batch late
still charts each request where it happened. Per interval and scenario it keeps two HDR
histograms (TTFT, TPOT; 0.1% precision) and four counts; `MAX_POINTS` intervals at most
(an hour at 2 s), the oldest dropped, so a day-long test holds a bounded window.
`points()` returns the closed intervals (those that ended `SETTLE_S` ago, so a worker's
records have arrived) as JSON for the charts page (`/kvswarm/charts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from kvswarm.records import RequestRecord

__all__ = ["INTERVAL_S", "MAX_POINTS", "LiveTimeline"]

INTERVAL_S = 2.0
MAX_POINTS = 1800
# An interval is charted once it ended this long ago: a worker ships records each second.
SETTLE_S = 1.5
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000


def _histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, 3)


def _us(seconds: float) -> int:
    return min(max(int(seconds * 1_000_000), _LOWEST_US), _HIGHEST_US)


@dataclass
class _Interval:
    ttft: HdrHistogram = field(default_factory=_histogram)
    tpot: HdrHistogram = field(default_factory=_histogram)
    requests: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0  # of successful requests whose usage reported both
    cached_tokens: int = 0


class LiveTimeline:
    """Per-interval figures of the test that started at `start_unix_s`."""

    def __init__(
        self, start_unix_s: float, interval_s: float = INTERVAL_S, max_points: int = MAX_POINTS
    ) -> None:
        self.start_unix_s = start_unix_s
        self.interval_s = interval_s
        self.max_points = max_points
        self._intervals: dict[int, dict[str, _Interval]] = {}
        self._newest = -1

    def add(self, record: RequestRecord) -> None:
        """Take one record: a handful of operations, whatever its length."""
        if not record.ok:
            return
        ended = record.start_unix_s + (record.e2e_s or 0.0)
        index = max(0, int((ended - self.start_unix_s) // self.interval_s))
        if index <= self._newest - self.max_points:
            return  # older than the window kept
        scenarios = self._intervals.get(index)
        if scenarios is None:
            scenarios = self._intervals[index] = {}
            if index > self._newest:
                self._newest = index
                self._drop_old()
        bucket = scenarios.get(record.scenario)
        if bucket is None:
            bucket = scenarios[record.scenario] = _Interval()
        bucket.requests += 1
        if record.ttft_s is not None:
            bucket.ttft.record_value(_us(record.ttft_s))
        if record.tpot_s is not None:
            bucket.tpot.record_value(_us(record.tpot_s))
        bucket.output_tokens += record.output_tokens or 0
        if record.prompt_tokens is not None and record.cached_tokens is not None:
            bucket.prompt_tokens += record.prompt_tokens
            bucket.cached_tokens += record.cached_tokens

    def points(self, now_unix_s: float | None = None) -> dict[str, Any]:
        """The closed intervals, per scenario: `t` (s from the start, the interval's end),
        `requests`, TTFT and TPOT p50/p99 (ms), output tokens/s, cached share (or None)."""
        now = time.time() if now_unix_s is None else now_unix_s
        closed = int((now - SETTLE_S - self.start_unix_s) // self.interval_s)
        series: dict[str, list[dict[str, Any]]] = {}
        for index in sorted(i for i in self._intervals if i < closed):
            for scenario, bucket in sorted(self._intervals[index].items()):
                series.setdefault(scenario, []).append(self._point(index, bucket))
        return {"start_unix_s": self.start_unix_s, "interval_s": self.interval_s,
                "series": series}  # fmt: skip

    def _point(self, index: int, bucket: _Interval) -> dict[str, Any]:
        def ms(histogram: HdrHistogram, percentile: float) -> float | None:
            if not histogram.get_total_count():
                return None
            return round(histogram.get_value_at_percentile(percentile) / 1000.0, 3)

        return {
            "t": (index + 1) * self.interval_s,
            "requests": bucket.requests,
            "ttft_p50_ms": ms(bucket.ttft, 50.0),
            "ttft_p99_ms": ms(bucket.ttft, 99.0),
            "tpot_p50_ms": ms(bucket.tpot, 50.0),
            "tpot_p99_ms": ms(bucket.tpot, 99.0),
            "output_tokens_per_s": round(bucket.output_tokens / self.interval_s, 2),
            "cached_share": (
                round(bucket.cached_tokens / bucket.prompt_tokens, 4)
                if bucket.prompt_tokens
                else None
            ),
        }

    def _drop_old(self) -> None:
        oldest = self._newest - self.max_points
        for index in [i for i in self._intervals if i <= oldest]:
            del self._intervals[index]
