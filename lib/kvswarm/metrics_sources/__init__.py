"""Server metrics behind one interface, and the run's window over them.

- `MetricsSource` (`name`, `url`, `snapshot() -> Snapshot`): where metrics come from.
  `ScrapeSource` reads a /metrics page directly; a Prometheus-query source fits the same
  interface.
- `Snapshot`, `parse_metrics`, `counter_deltas`: readings and what changed between two.
- `ServerWindow` (`open`, `mark_measuring`, `close`) and `ServerReport`: run.json's
  `server` section.
"""

from __future__ import annotations

from kvswarm.metrics_sources.snapshot import (  # isort: skip
    Snapshot,
    counter_deltas,
    parse_metrics,
    sample_key,
    snapshot_of,
    split_key,
)
from kvswarm.metrics_sources.source import MetricsSource  # isort: skip
from kvswarm.metrics_sources.scrape import ScrapeSource, read_page, scrape  # isort: skip
from kvswarm.metrics_sources.report import ServerReport, SourceReport  # isort: skip
from kvswarm.metrics_sources.window import ServerWindow, cache_source_names  # isort: skip

__all__ = [
    "MetricsSource",
    "ScrapeSource",
    "ServerReport",
    "ServerWindow",
    "Snapshot",
    "SourceReport",
    "cache_source_names",
    "counter_deltas",
    "parse_metrics",
    "sample_key",
    "read_page",
    "scrape",
    "snapshot_of",
    "split_key",
]
