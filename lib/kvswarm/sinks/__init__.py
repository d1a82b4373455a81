"""Where records and server readings go besides the run directory: kvswarm's Prometheus
exporter and the per-run server metrics.

- `attach_exporter(plugin, bind, port, interval_s=..., readings=...) -> Exporter`: the one
  call that binds both to a kvswarm plugin (results-owning process only);
- `Exporter`: load histograms and counters fed by `add(record)`, load-generator gauges
  (`LoadReadings`), the stack's metrics mirrored with a `source` label
  (`MirrorCollector`), served by prometheus-client's WSGI app; `EXPORTED_METRICS` lists
  what it serves;
- `ServerSampler`: every metrics source every few seconds into server_metrics.jsonl, and
  run.json's `server_metrics` section (`ServerMetricsSection`) over the measured window.
"""

from __future__ import annotations

from kvswarm.sinks.server_metrics import (  # isort: skip
    CounterStats,
    DerivedFigure,
    GaugeStats,
    HistogramStats,
    ServerMetricsSection,
    SourceWindow,
)
from kvswarm.sinks.mirror import MirrorCollector  # isort: skip
from kvswarm.sinks.exporter import (  # isort: skip
    EXPORTED_METRICS,
    Exporter,
    ExportedMetric,
    LoadReadings,
    exported_metrics_markdown,
)
from kvswarm.sinks.sampler import SERVER_METRICS_JSONL, ServerSampler  # isort: skip
from kvswarm.sinks.attach import RUN_RECORD_FIELD, attach_exporter  # isort: skip

__all__ = [
    "EXPORTED_METRICS",
    "RUN_RECORD_FIELD",
    "SERVER_METRICS_JSONL",
    "CounterStats",
    "DerivedFigure",
    "ExportedMetric",
    "Exporter",
    "GaugeStats",
    "HistogramStats",
    "LoadReadings",
    "MirrorCollector",
    "ServerMetricsSection",
    "ServerSampler",
    "SourceWindow",
    "attach_exporter",
    "exported_metrics_markdown",
]
