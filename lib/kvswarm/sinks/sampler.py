"""`ServerSampler`: every metrics source, snapshotted every few seconds during a run.

One greenlet reads each source's /metrics page every `interval_s` seconds (and once more
when the warm-up ends and when the run closes), parses it once with prometheus-client's
parser, and hands the result to three places:

- `server_metrics.jsonl` in the run directory: one line per source per reading,
  `{"t_unix_s", "source", "url", "measuring", "error", "samples"}` (samples keyed as
  run.json keys them), so any figure can be recomputed over any span afterwards;
- the exporter's `MirrorCollector` (the stack's metrics served again with `source`);
- the window figures of run.json's `server_metrics` section (`close()`).

A source that cannot be read is a warning in that section, never a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import gevent
import orjson
from gevent.lock import Semaphore
from prometheus_client.parser import text_string_to_metric_families

from kvswarm.engines.profile import MetricNames
from kvswarm.metrics_sources import (
    MetricsSource,
    ScrapeSource,
    Snapshot,
    cache_source_names,
    read_page,
)
from kvswarm.metrics_sources.snapshot import snapshot_of
from kvswarm.sinks.mirror import MirrorCollector
from kvswarm.sinks.server_metrics import (
    ServerMetricsSection,
    WindowReadings,
    derive_stack,
    summarize_source,
)

__all__ = ["DEFAULT_INTERVAL_S", "SERVER_METRICS_JSONL", "ServerSampler"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
SERVER_METRICS_JSONL = "server_metrics.jsonl"


class ServerSampler:
    """Periodic snapshots of `sources` for one run (see the module's docstring).

    `start()` takes the first reading and starts the greenlet; `mark_measuring()` starts
    the window over (call it when the warm-up ends; without a warm-up the window starts
    with the first reading); `close()` takes the last reading and returns the section.
    """

    def __init__(
        self,
        sources: Sequence[MetricsSource],
        run_path: Path,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        metrics: MetricNames | None = None,
        engine: str = "",
        mirror: MirrorCollector | None = None,
        timeout_s: float = 3.0,
    ) -> None:
        self.sources = list(sources)
        self.interval_s = interval_s
        self.metrics = metrics or MetricNames()
        self.engine = engine
        self.mirror = mirror
        self.timeout_s = timeout_s
        self.path = run_path / SERVER_METRICS_JSONL
        self.readings = {source.name: WindowReadings(source.url) for source in self.sources}
        self.start_unix_s: float | None = None
        self._measuring = False
        self._file: IO[bytes] | None = None
        self._lock = Semaphore()
        self._loop: Any = None

    def start(self, measuring: bool = True) -> None:
        """First reading now; `measuring` False while a warm-up runs (`mark_measuring`
        then starts the window)."""
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        self._measuring = measuring
        self.start_unix_s = time.time()
        with self._lock:
            self._read_all()
        self._loop = gevent.spawn(self._run)

    def mark_measuring(self) -> None:
        """The warm-up is over: the window starts with a reading taken now."""
        with self._lock:
            self._measuring = True
            for readings in self.readings.values():
                readings.restart()
            self.start_unix_s = time.time()
            self._read_all()

    def close(self) -> ServerMetricsSection:
        """The last reading; the window's figures. The file is closed."""
        if self._loop is not None:
            self._loop.kill(block=True)
            self._loop = None
        with self._lock:
            self._read_all()
            end = time.time()
            if self._file is not None:
                self._file.close()
                self._file = None
        return self._section(end)

    def window_so_far(self) -> ServerMetricsSection:
        """The window's figures from the first reading to the latest, without a new reading
        (for a live view; warnings are in the section, not logged)."""
        with self._lock:
            return self._section(time.time(), log=False)

    # -- reading -----------------------------------------------------------------------

    def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.interval_s
            gevent.sleep(max(0.0, next_at - time.monotonic()))
            with self._lock:
                self._read_all()

    def _read_all(self) -> None:
        for source in self.sources:
            snapshot = self._read(source)
            self.readings[source.name].observe(snapshot)
            self._write(source, snapshot)
            # Parsing a page takes milliseconds: let the users' greenlets run in between.
            gevent.sleep(0)
        if self._file is not None:
            self._file.flush()

    def _read(self, source: MetricsSource) -> Snapshot:
        if not isinstance(source, ScrapeSource):
            return source.snapshot()  # not a page to read (e.g. a Prometheus query)
        url = source.url
        text, error = read_page(url, self.timeout_s)
        if error:
            return Snapshot(url=url, error=error)
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            return Snapshot(url=url, error=f"{url} is not Prometheus text: {exc}")
        if self.mirror is not None:
            self.mirror.update(source.name, families)
        snapshot = snapshot_of(families, url)
        if not snapshot.samples:
            return Snapshot(url=url, error=f"{url} has no metrics")
        return snapshot

    def _write(self, source: MetricsSource, snapshot: Snapshot) -> None:
        if self._file is None:
            return
        line = {
            "t_unix_s": time.time(),
            "source": source.name,
            "url": snapshot.url or source.url,
            "measuring": self._measuring,
            "error": snapshot.error or None,
            "samples": snapshot.samples,
        }
        self._file.write(orjson.dumps(line) + b"\n")

    # -- the window ----------------------------------------------------------------------

    def _section(self, end_unix_s: float, log: bool = True) -> ServerMetricsSection:
        start = self.start_unix_s
        window_s = end_unix_s - start if start is not None and end_unix_s > start else None
        sources = {
            name: summarize_source(readings, window_s, self.metrics)
            for name, readings in self.readings.items()
        }
        warnings = tuple(
            f"{name}: {source.warning}" for name, source in sources.items() if source.warning
        )
        for warning in warnings if log else ():
            logger.warning("kvswarm: server metrics: %s", warning)
        return ServerMetricsSection(
            interval_s=self.interval_s,
            file=SERVER_METRICS_JSONL,
            start_unix_s=start,
            end_unix_s=end_unix_s,
            window_s=window_s,
            engine=self.engine,
            sources=sources,
            derived=derive_stack(sources, cache_source_names(list(sources)), self.metrics),
            warnings=warnings,
        )
