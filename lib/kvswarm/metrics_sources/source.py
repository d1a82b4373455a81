"""`MetricsSource`: anything that can take a `Snapshot` of a server's metrics on demand.

A direct `/metrics` scrape (`ScrapeSource`) is one; a Prometheus query (the same metrics
as Prometheus last scraped them, summed over a Service's replicas) is another. Sources
never raise for an unreachable server: the snapshot carries `error` instead.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from kvswarm.metrics_sources.snapshot import Snapshot

__all__ = ["MetricsSource"]


@runtime_checkable
class MetricsSource(Protocol):
    """A named place metrics come from; `url` is what run.json shows for it."""

    name: str
    url: str

    def snapshot(self) -> Snapshot:
        """The source's metrics now; failures come back as a Snapshot with `error` set."""
        ...
