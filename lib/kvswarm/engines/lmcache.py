"""LMCache: the KV cache layer inside a vLLM instance of a vLLM + LMCache + Mooncake stack.

Not an engine (it runs inside vLLM and serves no requests of its own, so it has no
`EngineProfile`): only the Prometheus names kvswarm reads from the vLLM instances' pages,
where LMCache's counters appear (prometheus-client multiprocess mode), for run.json's
server-metrics section and the Grafana dashboard. Names as LMCache's
`lmcache/observability.py` declares them, with the `_total` its counters are exposed with.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

__all__ = ["LMCACHE_METRICS", "LmcacheMetricNames"]


@dataclass(frozen=True)
class LmcacheMetricNames:
    """LMCache's counter sample names."""

    # Tokens vLLM asked LMCache to retrieve, and those it found (its retrieve hit rate).
    requested_tokens: str
    hit_tokens: str
    retrieve_requests: str
    store_requests: str
    stored_tokens: str
    # The prefix every sample of LMCache starts with (how its series are recognised).
    prefix: str

    def names(self) -> tuple[str, ...]:
        """Every sample name above (without the prefix)."""
        return astuple(self)[:-1]


LMCACHE_METRICS = LmcacheMetricNames(
    requested_tokens="lmcache:num_requested_tokens_total",
    hit_tokens="lmcache:num_hit_tokens_total",
    retrieve_requests="lmcache:num_retrieve_requests_total",
    store_requests="lmcache:num_store_requests_total",
    stored_tokens="lmcache:num_stored_tokens_total",
    prefix="lmcache:",
)
