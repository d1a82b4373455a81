"""Live latency distributions of a running test, in bounded memory.

The process that owns the results (standalone or master) can keep one HDR histogram per
scenario and metric (TTFT, TPOT, ITL, E2E), fed by every successful record as it arrives
— on the master, from every worker's batches — so it can answer percentiles across the
whole fleet at any moment. It is a sink of the plugin's `record_kept` event, attached only
when something reads it (the web UI's `/kvswarm/live`); a headless run feeds nothing.

Feeding it costs the same for every request, whatever its length: four values, of which
the ITL one is the request's mean inter-token gap (so `itl` counts requests, and its
percentiles are those of per-request mean gaps, not of every gap). Values are
microseconds with 3 significant digits (0.1% relative precision); the exact percentiles,
over every gap, are computed at the end from requests.csv.
"""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

from kvswarm.records import RequestRecord

METRICS = ("ttft", "tpot", "itl", "e2e")
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_SIGNIFICANT_DIGITS = 3
LIVE_PERCENTILES = (50.0, 90.0, 99.0)


def _new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS)


def _us(seconds: float) -> int:
    return min(max(int(seconds * 1_000_000), _LOWEST_US), _HIGHEST_US)


class LiveLatency:
    """Per-scenario HDR histograms of TTFT, TPOT, mean ITL and E2E."""

    def __init__(self) -> None:
        self._histograms: dict[tuple[str, str], HdrHistogram] = {}
        self.requests = 0

    def _histogram(self, scenario: str, metric: str) -> HdrHistogram:
        key = (scenario, metric)
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = _new_histogram()
        return histogram

    def add(self, record: RequestRecord) -> None:
        """Take one record (a `record_kept` listener): O(1) whatever its token count."""
        if not record.ok:
            return
        self.requests += 1
        scenario = record.scenario
        for metric, value in (
            ("ttft", record.ttft_s),
            ("tpot", record.tpot_s),
            ("e2e", record.e2e_s),
        ):
            if value is not None:
                self._histogram(scenario, metric).record_value(_us(value))
        gaps = record.itl_s
        if gaps:
            self._histogram(scenario, "itl").record_value(_us(sum(gaps) / len(gaps)))

    def percentiles_ms(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{scenario: {metric: {"count": n, "p50": ms, "p90": ms, "p99": ms}}}."""
        view: dict[str, dict[str, dict[str, Any]]] = {}
        for (scenario, metric), histogram in sorted(self._histograms.items()):
            entry: dict[str, Any] = {"count": histogram.get_total_count()}
            for p in LIVE_PERCENTILES:
                entry[f"p{p:g}"] = histogram.get_value_at_percentile(p) / 1000.0
            view.setdefault(scenario, {})[metric] = entry
        return view
