"""`ServerWindow`: the server side of a run's measurement window.

`open()` learns which engine serves the target (from the config, or by asking) and takes
a start snapshot of every source: the target's own /metrics plus the configured extra
endpoints, each URL once. `mark_measuring()` takes the start snapshots again when the
warm-up ends, so counter deltas cover the measurement only. `close()` takes the end
snapshots and returns a `ServerReport`. Nothing here raises for a server that does not
answer: problems become warnings in the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

# A module reference, read at call time: kvswarm.engines itself imports this package.
import kvswarm.engines as engines
from kvswarm.metrics_sources.report import ServerReport, SourceReport
from kvswarm.metrics_sources.scrape import ScrapeSource
from kvswarm.metrics_sources.snapshot import Snapshot, counter_deltas
from kvswarm.metrics_sources.source import MetricsSource
from kvswarm.urls import metrics_url

if TYPE_CHECKING:
    from kvswarm.engines import EngineProfile

__all__ = ["SCRAPE_TIMEOUT_S", "ServerWindow", "cache_source_names"]

SCRAPE_TIMEOUT_S = 3.0
TARGET = "target"


def cache_source_names(names: Sequence[str]) -> tuple[str, ...]:
    """The sources that hold the prefix cache: the prefiller(s) when there are any (PD
    mode: the proxy has none, the decoder's local hits are not prompt reuse), else all."""
    prefillers = tuple(name for name in names if "prefill" in name.lower())
    return prefillers or tuple(names)


class ServerWindow:
    """Start and end snapshots of every metrics source of one run."""

    def __init__(
        self,
        profile: EngineProfile,
        sources: Sequence[MetricsSource],
        start: Mapping[str, Snapshot] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        """Prefer `open()`; this takes sources already made (e.g. Prometheus queries)."""
        self.profile = profile
        self._warnings = list(warnings)
        self.sources = _distinct(sources, self._warnings)
        self.start: dict[str, Snapshot] = dict(start or {})
        for source in self.sources:
            if source.name not in self.start:
                self.start[source.name] = source.snapshot()

    @property
    def engine(self) -> str:
        return self.profile.name

    @classmethod
    def open(
        cls,
        base_url: str,
        engine: str = "auto",
        extra_endpoints: Mapping[str, str] | None = None,
        timeout_s: float = SCRAPE_TIMEOUT_S,
        api_key: str | None = None,
    ) -> ServerWindow:
        """Detect the engine (`engine` "auto") or take the named one; snapshot every source.

        `extra_endpoints` maps names to /metrics URLs (a PD stack's prefiller, decoder,
        mooncake_master...); one whose URL is the target's, or an earlier one's, is
        scraped once, under the first name. ValueError for an unknown engine name.
        `api_key` (the target's) goes with detection's `/v1/models` request only.
        """
        target = ScrapeSource(TARGET, metrics_url(base_url), timeout_s)
        start: dict[str, Snapshot] = {}
        if engine == "auto":
            engine, start[TARGET] = engines.detect_engine(base_url, timeout_s, api_key)
        profile = engines.engine_profile(engine)
        extras = [ScrapeSource(n, u, timeout_s) for n, u in (extra_endpoints or {}).items()]
        return cls(profile, [target, *extras], start)

    def mark_measuring(self) -> None:
        """The warm-up is over: take the start snapshots again."""
        self.start = {source.name: source.snapshot() for source in self.sources}

    def close(self) -> ServerReport:
        """Take the end snapshots; the report of the window."""
        end = {source.name: source.snapshot() for source in self.sources}
        reports = {
            source.name: _source_report(self.start[source.name], end[source.name])
            for source in self.sources
        }
        cache_names = cache_source_names(list(reports))
        cached = self.profile.cached_share(_summed(reports, cache_names))
        external = self.profile.external_cached_share(_summed(reports, list(reports)))
        answered = {n: s for n, s in end.items() if s.ok}
        return ServerReport(
            engine=self.profile.name,
            cache_semantics=_cache_semantics(self.profile, answered),
            cached_share=cached.value if cached else None,
            cached_share_formula=cached.formula if cached else None,
            cached_share_sources=cache_names if cached else (),
            external_cached_share=external.value if external else None,
            kv_store=self.profile.kv_store(answered),
            prompt_tokens_by_source=self._prompt_sources(reports),
            sources=reports,
            warnings=tuple(self._warnings),
        )

    def _prompt_sources(self, reports: Mapping[str, SourceReport]) -> dict[str, dict[str, float]]:
        by_name = {
            name: self.profile.prompt_sources(report.deltas or {})
            for name, report in reports.items()
        }
        return {name: sources for name, sources in by_name.items() if sources}


def _cache_semantics(profile: EngineProfile, end: Mapping[str, Snapshot]) -> str:
    """The profile's words for a cache hit, with what the server reports filled in (vLLM:
    its block size) when the profile can read it from the end snapshots."""
    at = getattr(profile, "cache_semantics_at", None)
    return at(end) if at else profile.cache_semantics


def _distinct(sources: Sequence[MetricsSource], warnings: list[str]) -> list[MetricsSource]:
    """Each URL once, under its first name; a note for every duplicate dropped."""
    seen: dict[str, str] = {}
    kept = []
    for source in sources:
        if source.url in seen:
            warnings.append(f"{source.name}: same URL as {seen[source.url]}, read once")
            continue
        seen[source.url] = source.name
        kept.append(source)
    return kept


def _source_report(start: Snapshot, end: Snapshot) -> SourceReport:
    errors = [s.error for s in (start, end) if s.error]
    warning = "; ".join(dict.fromkeys(errors)) or None
    if not (start.ok and end.ok):
        return SourceReport(url=end.url or start.url, warning=warning)
    return SourceReport(
        url=end.url, warning=warning, deltas=counter_deltas(start, end), end=end.gauges()
    )


def _summed(reports: Mapping[str, SourceReport], names: Sequence[str]) -> dict[str, float]:
    """The deltas of the `names` sources, added up key by key."""
    total: dict[str, float] = {}
    for name in names:
        for key, value in (reports[name].deltas or {}).items():
            total[key] = total.get(key, 0.0) + value
    return total
