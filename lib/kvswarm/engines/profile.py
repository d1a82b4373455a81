"""`EngineProfile`: everything kvswarm knows about one serving engine, as data.

A profile holds the engine's tokenize request shape, the wording of its context-length
errors, its Prometheus metric names, how its per-request timings are read, how its
server-side cached share is computed, and how its prefix cache is reset. Profiles are
frozen dataclasses; an engine subclasses `EngineProfile` only where its behaviour (not
its data) differs. Each engine's module registers its one profile by name
(`kvswarm.engines.registry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kvswarm.metrics_sources.snapshot import split_key
from kvswarm.tokens import TokenizeShape

if TYPE_CHECKING:
    from kvswarm.client import StreamResult
    from kvswarm.metrics_sources.snapshot import Snapshot

__all__ = [
    "CacheReset",
    "CachedShare",
    "EngineProfile",
    "MetricNames",
    "RequestTimings",
    "header_count",
    "header_seconds",
    "metric_total",
]


@dataclass(frozen=True)
class MetricNames:
    """An engine's Prometheus sample names; None where the engine has no such metric.

    Counters are named with their `_total` suffix, histograms by their base name (the
    `_sum`, `_count` and `_bucket` samples hang off it), gauges as they are.
    """

    prefix_cache_queries: str | None = None
    prefix_cache_hits: str | None = None
    # Hits and queries of an external KV store through a connector (vLLM + LMCache).
    external_prefix_cache_queries: str | None = None
    external_prefix_cache_hits: str | None = None
    cached_tokens: str | None = None
    prompt_tokens: str | None = None
    # Prompt tokens by where their KV came from, in a `source` label (vLLM:
    # local_compute, local_cache_hit, external_kv_transfer).
    prompt_tokens_by_source: str | None = None
    generation_tokens: str | None = None
    ttft_seconds: str | None = None
    prefill_seconds: str | None = None
    decode_seconds: str | None = None
    queue_seconds: str | None = None
    kv_cache_usage: str | None = None
    requests_running: str | None = None
    requests_waiting: str | None = None


@dataclass(frozen=True, slots=True)
class RequestTimings:
    """What the engine itself said about one request; None where it did not say."""

    prefill_s: float | None = None
    transfer_s: float | None = None
    decode_s: float | None = None
    queue_s: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    created_cache_tokens: int | None = None


@dataclass(frozen=True)
class CachedShare:
    """The server-reported share of prompt tokens served from cache, and how it was got."""

    value: float
    # The formula in words, with the metric names: "prefix_cache_hits / prefix_cache_queries".
    formula: str


@dataclass(frozen=True)
class CacheReset:
    """The outcome of asking an engine to drop its prefix cache."""

    status: Literal["reset", "not_supported", "failed"]
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "reset"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# How engines word a prompt that does not fit the context window, whichever engine it is.
ANY_CONTEXT_ERROR = re.compile(
    r"maximum context length|context length|context size|exceeds? the available context|"
    r"too long|max_model_len",
    re.IGNORECASE,
)


def metric_total(values: Mapping[str, float], name: str) -> float | None:
    """The sum of every sample called `name`, whatever its labels; None if there is none.

    `values` is keyed by sample key (`name{label="v",...}`), as snapshots and deltas are.
    """
    total = None
    for key, value in values.items():
        if key.partition("{")[0] == name:
            total = (total or 0.0) + value
    return total


def header_seconds(text: str | None) -> float | None:
    """A header value in milliseconds as seconds; None when absent or not a number."""
    try:
        return float(text) / 1000.0 if text is not None else None
    except ValueError:
        return None


def header_count(text: str | None) -> int | None:
    """A header value that counts something (tokens); None when absent or not an integer."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _short(name: str) -> str:
    """A metric name without its engine prefix and `_total`, for formulas in words."""
    return name.rpartition(":")[2].removesuffix("_total")


@dataclass(frozen=True)
class EngineProfile:
    """One engine's endpoints, metric names and per-request details."""

    name: str
    # The engine's tokenize endpoint; None when it has none.
    tokenize: TokenizeShape | None
    # What a "cache hit" means on this engine, for reports and the README.
    cache_semantics: str
    # Metric names start with this; how `detect_engine` recognises the engine.
    metrics_prefix: str = ""
    metrics: MetricNames = field(default_factory=MetricNames)
    context_error: re.Pattern[str] = ANY_CONTEXT_ERROR
    # Whether requests may carry `min_tokens` (generate at least that many): a trace
    # replay asks for exactly each row's output_length with it and `ignore_eos`.
    min_tokens: bool = False

    def is_context_error(self, status_code: int | None, error_text: str) -> bool:
        """Whether a failed request was rejected as too long for the model's context."""
        return status_code == 400 and bool(self.context_error.search(error_text))

    def request_timings(self, result: StreamResult) -> RequestTimings:
        """The engine's own per-request timings from a response; none by default."""
        return RequestTimings()

    def cached_share(self, deltas: Mapping[str, float]) -> CachedShare | None:
        """Share of prompt tokens served from cache, from counter deltas over a window.

        `deltas` is keyed by sample key; labelled samples of one metric are summed. The
        default: prefix-cache hits / queries, else cached / prompt tokens (for engines
        whose prompt-token counter includes the cached ones).
        """
        names = self.metrics
        if names.prefix_cache_hits and names.prefix_cache_queries:
            share = _ratio(deltas, names.prefix_cache_hits, names.prefix_cache_queries)
            if share is not None:
                return share
        if names.cached_tokens and names.prompt_tokens:
            return _ratio(deltas, names.cached_tokens, names.prompt_tokens)
        return None

    def external_cached_share(self, deltas: Mapping[str, float]) -> CachedShare | None:
        """Share of queried tokens loaded from an external KV store (connector hits)."""
        names = self.metrics
        if names.external_prefix_cache_hits and names.external_prefix_cache_queries:
            return _ratio(
                deltas, names.external_prefix_cache_hits, names.external_prefix_cache_queries
            )
        return None

    def prompt_sources(self, deltas: Mapping[str, float]) -> dict[str, float] | None:
        """Prompt tokens over a window by where their KV came from (the `source` label of
        `prompt_tokens_by_source`, summed over other labels); None if not reported."""
        name = self.metrics.prompt_tokens_by_source
        if not name:
            return None
        sources: dict[str, float] = {}
        for key, value in deltas.items():
            sample, labels = split_key(key)
            if sample == name and "source" in labels:
                sources[labels["source"]] = sources.get(labels["source"], 0.0) + value
        return sources or None

    def kv_store(self, end: Mapping[str, Snapshot]) -> str | None:
        """Which KV store served the run, from the end-of-window snapshots; None: unknown."""
        return None

    def reset_prefix_cache(self, base_url: str, timeout_s: float = 10.0) -> CacheReset:
        """Drop the engine's prefix cache, so the next request starts cold."""
        return CacheReset("not_supported", f"{self.name} has no prefix-cache reset endpoint")

    def describe(self) -> dict[str, Any]:
        """The profile as plain data (for `kvswarm engine` listings and reports)."""
        return {
            "name": self.name,
            "tokenize": self.tokenize.path if self.tokenize else None,
            "cache_semantics": self.cache_semantics,
            "metrics": asdict(self.metrics),
        }


def _ratio(deltas: Mapping[str, float], numerator: str, denominator: str) -> CachedShare | None:
    top = metric_total(deltas, numerator)
    bottom = metric_total(deltas, denominator)
    if not bottom:
        return None
    return CachedShare((top or 0.0) / bottom, f"{_short(numerator)} / {_short(denominator)}")
