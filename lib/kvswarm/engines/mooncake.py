"""Mooncake's master (`mooncake_master`): the KV store of a vLLM + LMCache + Mooncake stack.

Not an engine (it serves no requests, so it has no `EngineProfile` and is not registered):
only the Prometheus names kvswarm reads from its metrics page (`--metrics_port`, 9003 by
default), for run.json's server-metrics section and the Grafana dashboard.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

__all__ = ["MOONCAKE_MASTER_METRICS", "KvStoreMetricNames"]


@dataclass(frozen=True)
class KvStoreMetricNames:
    """A KV store's Prometheus sample names: gauges as they are, counters with `_total`."""

    key_count: str
    allocated_bytes: str
    capacity_bytes: str
    active_clients: str
    # Writes: one PutStart per object stored (LMCache stores one per KV chunk).
    put_requests: str
    # Reads: one GetReplicaList per lookup of an object's replicas.
    get_requests: str
    evicted_keys: str
    # The prefix every sample of the store starts with (how a source is recognised).
    prefix: str

    def names(self) -> tuple[str, ...]:
        """Every sample name above (without the prefix)."""
        return astuple(self)[:-1]


MOONCAKE_MASTER_METRICS = KvStoreMetricNames(
    key_count="master_key_count",
    allocated_bytes="master_allocated_bytes",
    capacity_bytes="master_total_capacity_bytes",
    active_clients="master_active_clients",
    put_requests="master_put_start_requests_total",
    get_requests="master_get_replica_list_requests_total",
    evicted_keys="master_evicted_key_count",
    prefix="master_",
)
