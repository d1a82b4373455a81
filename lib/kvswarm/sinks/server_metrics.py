"""run.json's `server_metrics` section: every metrics source over the measured window.

`ServerSampler` snapshots every source every few seconds (server_metrics.jsonl); this
module turns the snapshot at the start of the window (the warm-up's end) and the last one
(the run's end), with every gauge reading in between, into typed figures:

- counters: delta and rate (delta / window seconds);
- histograms: count, sum and mean of the window's observations, and quantiles estimated
  from the bucket deltas the way Prometheus's `histogram_quantile` does (linear within
  the bucket the rank falls in; the largest finite bound when it falls in `+Inf`);
- gauges: start, end, min and max of the readings in the window;
- derived figures, each with its formula: prefix-cache hit rate, external (KV connector)
  hit rate, LMCache's retrieve hit rate, Mooncake key count and allocated bytes change,
  Mooncake put and get rates.

Counters are keyed by sample key (`name{label="v"}`); histograms by the key of the series
without `le`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kvswarm.engines.lmcache import LMCACHE_METRICS
from kvswarm.engines.mooncake import MOONCAKE_MASTER_METRICS
from kvswarm.engines.profile import MetricNames, metric_total
from kvswarm.metrics_sources.snapshot import Snapshot, sample_key, split_key

__all__ = [
    "QUANTILES",
    "CounterStats",
    "DerivedFigure",
    "GaugeStats",
    "HistogramStats",
    "ServerMetricsSection",
    "SourceWindow",
    "WindowReadings",
    "bucket_quantile",
    "derive_stack",
    "summarize_source",
]

QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class CounterStats:
    delta: float
    rate_per_s: float | None


@dataclass(frozen=True)
class HistogramStats:
    """Observations within the window; quantiles keyed `p50`, `p90`, `p99`."""

    count: float
    sum: float
    mean: float | None
    quantiles: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class GaugeStats:
    start: float
    end: float
    min: float
    max: float


@dataclass(frozen=True)
class DerivedFigure:
    """A figure computed from the window's deltas; `value` None when its denominator is 0."""

    value: float | None
    formula: str
    unit: str


@dataclass(frozen=True)
class SourceWindow:
    """One metrics source over the window; empty figures and a `warning` when the start or
    end snapshot could not be read."""

    url: str
    snapshots: int = 0
    failed_snapshots: int = 0
    warning: str | None = None
    counters: dict[str, CounterStats] = field(default_factory=dict)
    histograms: dict[str, HistogramStats] = field(default_factory=dict)
    gauges: dict[str, GaugeStats] = field(default_factory=dict)
    derived: dict[str, DerivedFigure] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceWindow:
        return cls(
            url=data["url"],
            snapshots=int(data.get("snapshots", 0)),
            failed_snapshots=int(data.get("failed_snapshots", 0)),
            warning=data.get("warning"),
            counters={k: CounterStats(**v) for k, v in (data.get("counters") or {}).items()},
            histograms={k: HistogramStats(**v) for k, v in (data.get("histograms") or {}).items()},
            gauges={k: GaugeStats(**v) for k, v in (data.get("gauges") or {}).items()},
            derived={k: DerivedFigure(**v) for k, v in (data.get("derived") or {}).items()},
        )


@dataclass(frozen=True)
class ServerMetricsSection:
    """run.json's `server_metrics`: every source sampled every `interval_s` seconds, over
    the window from `start_unix_s` (the warm-up's end) to `end_unix_s` (the run's end).

    `derived` holds the stack's figures (the prefix-cache hit rate over the sources that
    hold the prefix cache, the prefillers in PD mode); each source has its own too.
    """

    interval_s: float
    file: str
    start_unix_s: float | None = None
    end_unix_s: float | None = None
    window_s: float | None = None
    engine: str = ""
    sources: dict[str, SourceWindow] = field(default_factory=dict)
    derived: dict[str, DerivedFigure] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerMetricsSection:
        return cls(
            interval_s=float(data["interval_s"]),
            file=data.get("file", ""),
            start_unix_s=data.get("start_unix_s"),
            end_unix_s=data.get("end_unix_s"),
            window_s=data.get("window_s"),
            engine=data.get("engine", ""),
            sources={k: SourceWindow.from_dict(v) for k, v in (data.get("sources") or {}).items()},
            derived={k: DerivedFigure(**v) for k, v in (data.get("derived") or {}).items()},
            warnings=tuple(data.get("warnings") or ()),
        )


@dataclass
class WindowReadings:
    """What the sampler keeps of one source: the window's first and last good snapshots,
    every gauge's min and max in between, and how many snapshots were taken or failed."""

    url: str
    start: Snapshot | None = None
    end: Snapshot | None = None
    gauge_min: dict[str, float] = field(default_factory=dict)
    gauge_max: dict[str, float] = field(default_factory=dict)
    snapshots: int = 0
    failed: int = 0
    last_error: str = ""

    def restart(self) -> None:
        """The window starts now (the warm-up is over): forget what came before."""
        self.start = self.end = None
        self.gauge_min.clear()
        self.gauge_max.clear()
        self.snapshots = self.failed = 0
        self.last_error = ""

    def observe(self, snapshot: Snapshot) -> None:
        self.snapshots += 1
        if not snapshot.ok:
            self.failed += 1
            self.last_error = snapshot.error or f"{self.url} has no metrics"
            return
        if self.start is None:
            self.start = snapshot
        self.end = snapshot
        for key, value in snapshot.gauges().items():
            low = self.gauge_min.get(key)
            self.gauge_min[key] = value if low is None else min(low, value)
            high = self.gauge_max.get(key)
            self.gauge_max[key] = value if high is None else max(high, value)


def summarize_source(
    readings: WindowReadings, window_s: float | None, metrics: MetricNames
) -> SourceWindow:
    """The window's figures for one source."""
    start, end = readings.start, readings.end
    warning = None
    if readings.failed:
        failed = f"{readings.failed} of {readings.snapshots} snapshots failed"
        warning = f"{failed}: {readings.last_error}"
    if start is None or end is None or start is end:
        return SourceWindow(
            url=readings.url,
            snapshots=readings.snapshots,
            failed_snapshots=readings.failed,
            warning=warning or "fewer than two snapshots in the window",
        )
    deltas = _deltas(start, end)
    histograms = _histograms(deltas)
    parts = {key for series in histograms.values() for key in series.keys}
    counters = {
        key: CounterStats(delta, delta / window_s if window_s else None)
        for key, delta in deltas.items()
        if key not in parts
    }
    gauges = {
        key: GaugeStats(
            start=start.samples.get(key, value),
            end=value,
            min=readings.gauge_min[key],
            max=readings.gauge_max[key],
        )
        for key, value in end.gauges().items()
    }
    return SourceWindow(
        url=readings.url,
        snapshots=readings.snapshots,
        failed_snapshots=readings.failed,
        warning=warning,
        counters=counters,
        histograms={key: series.stats() for key, series in histograms.items()},
        gauges=gauges,
        derived=_derived(deltas, gauges, window_s, metrics),
    )


def derive_stack(
    sources: Mapping[str, SourceWindow], cache_sources: Sequence[str], metrics: MetricNames
) -> dict[str, DerivedFigure]:
    """The stack's hit rates: prefix cache over `cache_sources`, external over every source."""
    cache = _summed_deltas(sources, cache_sources)
    every = _summed_deltas(sources, list(sources))
    figures: dict[str, DerivedFigure] = {}
    _add_ratio(figures, "prefix_cache_hit_rate", cache, metrics.prefix_cache_hits,
               metrics.prefix_cache_queries, f"summed over {', '.join(cache_sources)}")  # fmt: skip
    _add_ratio(figures, "external_prefix_cache_hit_rate", every,
               metrics.external_prefix_cache_hits, metrics.external_prefix_cache_queries,
               "summed over every source")  # fmt: skip
    return figures


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """`histogram_quantile(q, ...)` of cumulative (upper bound, count) buckets, sorted by
    bound and ending with +Inf; None when there are no observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for index, (bound, count) in enumerate(buckets):
        if count >= rank:
            if bound == float("inf"):
                return buckets[index - 1][0] if index > 0 else None
            if index == 0 and bound <= 0:
                return bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return None


# ---------------------------------------------------------------------------- helpers --


def _deltas(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """end - start of every accumulating sample; one that went down restarted from 0."""
    deltas = {}
    for key in sorted(end.accumulating):
        before, after = start.samples.get(key, 0.0), end.samples[key]
        deltas[key] = after - before if after >= before else after
    return deltas


@dataclass
class _Series:
    buckets: list[tuple[float, float]] = field(default_factory=list)
    count: float = 0.0
    sum: float = 0.0
    keys: set[str] = field(default_factory=set)

    def stats(self) -> HistogramStats:
        ordered = sorted(self.buckets)
        count = self.count or (ordered[-1][1] if ordered else 0.0)
        return HistogramStats(
            count=count,
            sum=self.sum,
            mean=self.sum / count if count else None,
            quantiles={f"p{round(q * 100)}": bucket_quantile(q, ordered) for q in QUANTILES},
        )


def _histograms(deltas: Mapping[str, float]) -> dict[str, _Series]:
    series: dict[str, _Series] = {}
    for key, value in deltas.items():
        name, labels = split_key(key)
        if not name.endswith("_bucket") or "le" not in labels:
            continue
        bound = float(labels.pop("le"))
        base = name.removesuffix("_bucket")
        entry = series.setdefault(sample_key(base, labels), _Series())
        entry.buckets.append((bound, value))
        entry.keys.add(key)
    for series_key, entry in series.items():
        base, labels = split_key(series_key)
        for suffix in ("_count", "_sum"):
            part = sample_key(base + suffix, labels)
            if part in deltas:
                setattr(entry, suffix[1:], deltas[part])
                entry.keys.add(part)
    return series


def _derived(
    deltas: Mapping[str, float],
    gauges: Mapping[str, GaugeStats],
    window_s: float | None,
    metrics: MetricNames,
) -> dict[str, DerivedFigure]:
    figures: dict[str, DerivedFigure] = {}
    _add_ratio(
        figures, "prefix_cache_hit_rate", deltas,
        metrics.prefix_cache_hits, metrics.prefix_cache_queries,
    )  # fmt: skip
    _add_ratio(
        figures, "external_prefix_cache_hit_rate", deltas,
        metrics.external_prefix_cache_hits, metrics.external_prefix_cache_queries,
    )  # fmt: skip
    _add_ratio(
        figures, "lmcache_hit_rate", deltas,
        LMCACHE_METRICS.hit_tokens, LMCACHE_METRICS.requested_tokens,
    )  # fmt: skip
    store = MOONCAKE_MASTER_METRICS
    for figure, name in (("mooncake_key_count_change", store.key_count),
                         ("mooncake_allocated_bytes_change", store.allocated_bytes)):  # fmt: skip
        if name in gauges:
            change = gauges[name].end - gauges[name].start
            unit = "bytes" if "bytes" in name else "keys"
            figures[figure] = DerivedFigure(change, f"end - start of {name}", unit)
    for figure, name in (("mooncake_put_rate_per_s", store.put_requests),
                         ("mooncake_get_rate_per_s", store.get_requests)):  # fmt: skip
        total = metric_total(deltas, name)
        if total is not None:
            rate = total / window_s if window_s else None
            figures[figure] = DerivedFigure(rate, f"Δ{name} / window seconds", "1/s")
    return figures


def _add_ratio(
    figures: dict[str, DerivedFigure],
    figure: str,
    deltas: Mapping[str, float],
    numerator: str | None,
    denominator: str | None,
    note: str = "",
) -> None:
    if not numerator or not denominator:
        return
    bottom = metric_total(deltas, denominator)
    if bottom is None:
        return
    top = metric_total(deltas, numerator) or 0.0
    formula = f"Δ{numerator} / Δ{denominator}" + (f" ({note})" if note else "")
    figures[figure] = DerivedFigure(top / bottom if bottom else None, formula, "ratio")


def _summed_deltas(sources: Mapping[str, SourceWindow], names: Sequence[str]) -> dict[str, float]:
    total: dict[str, float] = {}
    for name in names:
        source = sources.get(name)
        for key, stats in (source.counters if source else {}).items():
            total[key] = total.get(key, 0.0) + stats.delta
    return total
