"""The server side of a run's measurement window: engine and metric snapshots.

At the start of the window kvswarm learns which engine it is testing (from the config or
by asking the server) and snapshots every metrics endpoint (the target's own /metrics
plus `metrics_endpoints` from the config); at the end it snapshots them again and keeps
the deltas. Nothing here can fail a run: problems become warnings in run.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvswarm.engines import ENGINES, cached_share, detect_engine, metrics_url
from kvswarm.scrape import Snapshot, scrape, window_report

SCRAPE_TIMEOUT_S = 3.0


@dataclass
class ServerWindow:
    engine: str
    endpoints: dict[str, str]
    start: dict[str, Snapshot] = field(default_factory=dict)

    @classmethod
    def open(
        cls, base_url: str, configured_engine: str, extra_endpoints: dict[str, str]
    ) -> ServerWindow:
        endpoints = {"target": metrics_url(base_url), **extra_endpoints}
        start: dict[str, Snapshot] = {}
        if configured_engine == "auto":
            engine, start["target"] = detect_engine(base_url, SCRAPE_TIMEOUT_S)
        else:
            engine = configured_engine
        for name, url in endpoints.items():
            if name not in start:
                start[name] = scrape(url, SCRAPE_TIMEOUT_S)
        return cls(engine=engine, endpoints=endpoints, start=start)

    def close(self) -> dict[str, Any]:
        """run.json's `server` section: engine, per-endpoint deltas, cached share."""
        reports = {
            name: window_report(self.start[name], scrape(url, SCRAPE_TIMEOUT_S))
            for name, url in self.endpoints.items()
        }
        profile = ENGINES[self.engine]
        target_deltas = reports["target"].get("deltas", {})
        return {
            "engine": self.engine,
            "cache_semantics": profile.cache_semantics,
            "cached_share": cached_share(profile, target_deltas),
            "metrics": reports,
        }
