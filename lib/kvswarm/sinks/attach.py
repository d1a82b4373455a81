"""`attach_exporter`: kvswarm's exporter and server sampler bound to one kvswarm plugin.

Called once, on the results-owning process (standalone or the Locust master), after the
plugin exists:

    exporter = attach_exporter(plugin, bind="0.0.0.0", port=9646, interval_s=5.0)

From then on, through the plugin's own events:

- the exporter serves http://bind:port/metrics until the environment quits (port 0:
  nothing is served, the server metrics are still sampled);
- `run_opened`: the load metrics start from zero, `kvswarm_run_info` names the run, and a
  `ServerSampler` starts on every metrics source of the run (the target's /metrics and
  the config's `metrics_endpoints`), its window starting when the warm-up ends;
- `record_kept`: every kept record is counted (`Exporter.add`);
- `run_closing`: the sampler's last reading; run.json gets the `server_metrics` section
  (`ServerMetricsSection`) where `RunRecord` has that field; `exporter.section` keeps it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import gevent

from kvswarm.metrics_sources import MetricsSource, ScrapeSource
from kvswarm.sinks.exporter import DEFAULT_BIND, DEFAULT_PORT, Exporter, LoadReadings, ProcessCpu
from kvswarm.sinks.sampler import DEFAULT_INTERVAL_S, ServerSampler
from kvswarm.urls import metrics_url

if TYPE_CHECKING:
    from locust.env import Environment

    from kvswarm.locust.plugin import KvswarmPlugin
    from kvswarm.rundir import RunDirectory

__all__ = ["RUN_RECORD_FIELD", "ExporterBinding", "attach_exporter", "default_readings"]

# run.json's key for the section (a `RunRecord` field of type `ServerMetricsSection | None`).
RUN_RECORD_FIELD = "server_metrics"


def attach_exporter(
    plugin: KvswarmPlugin,
    bind: str = DEFAULT_BIND,
    port: int = DEFAULT_PORT,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    readings: LoadReadings | None = None,
) -> Exporter:
    """Serve kvswarm's exporter for `plugin` and sample the stack's metrics every run.

    `readings`: the load-generator gauges (default: `default_readings(plugin)`: users per
    scenario and workers from Locust's runner, this process's CPU). KvswarmError with a
    one-line message when the port cannot be bound.
    """
    exporter = Exporter(readings or default_readings(plugin), mode=plugin.settings.mode)
    if port:
        exporter.serve(bind, port)
    ExporterBinding(plugin, exporter, interval_s).listen()
    return exporter


def default_readings(plugin: KvswarmPlugin) -> LoadReadings:
    """Users per scenario and workers as Locust's runner counts them; requests in flight
    per scenario; the CPU use of this process and, on a master, of every connected worker.

    On a master, users, requests in flight and CPU are the workers' (from their stats
    reports): the master runs no users itself."""
    environment = plugin.environment
    collector = plugin.collector

    def users() -> dict[str, float]:
        scenario_of = {
            cls.__name__: getattr(cls, "scenario", cls.__name__) for cls in environment.user_classes
        }
        runner = environment.runner
        # Workers report every class of their config (those this run does not use at 0).
        running = (
            runner.reported_user_classes_count
            if collector is not None
            else runner.user_classes_count
        )
        counts: dict[str, float] = {}
        for name, count in running.items():
            if name in scenario_of:
                scenario = scenario_of[name]
                counts[scenario] = counts.get(scenario, 0) + count
        return counts

    def workers() -> float:
        return float(getattr(environment.runner, "worker_count", 0)) if plugin.is_master else 0.0

    def in_flight() -> dict[str, float]:
        if collector is None:
            return {scenario: float(count) for scenario, count in plugin.in_flight.items()}
        totals: dict[str, float] = {}
        for load in collector.live_loads().values():
            for scenario, count in load.in_flight.items():
                totals[scenario] = totals.get(scenario, 0.0) + count
        return totals

    own = ProcessCpu("master" if plugin.is_master else "local")

    def cpu() -> dict[str, float]:
        if collector is None:
            return own()
        return {**own(), **{w: load.cpu_share for w, load in collector.live_loads().items()}}

    return LoadReadings(users=users, workers=workers, in_flight=in_flight, cpu=cpu)


class ExporterBinding:
    """The listeners that tie one `Exporter` to one plugin's events (see the module)."""

    def __init__(self, plugin: KvswarmPlugin, exporter: Exporter, interval_s: float) -> None:
        self.plugin = plugin
        self.exporter = exporter
        self.interval_s = interval_s
        self.sampler: ServerSampler | None = None
        self._timers: list[Any] = []

    def listen(self) -> None:
        events = self.plugin.events
        events.run_opened.add_listener(self.on_run_opened)
        if self.exporter.url is not None:
            # Records feed the exporter only while it serves: with no reader (port 0)
            # a run pays nothing per request for it; the sampler still runs.
            events.record_kept.add_listener(self.on_record_kept)
        events.run_closing.add_listener(self.on_run_closing)
        self.plugin.environment.events.quit.add_listener(self.on_quit)

    def on_record_kept(self, record: Any, **_kwargs: Any) -> None:
        self.exporter.add(record)

    def on_run_opened(self, environment: Environment, run: RunDirectory, **_kwargs: Any) -> None:
        record = run.record
        self.exporter.reset(
            {
                "run_id": record.run_id,
                "mode": record.mode,
                "engine": record.engine,
                "target": record.target,
                "model": record.model,
            },
            mode=record.mode,
        )
        self.exporter.mirror.clear()
        warmup_s = record.window.warmup_s
        self.sampler = ServerSampler(
            self._sources(),
            run.path,
            interval_s=self.interval_s,
            metrics=self.plugin.engine.metrics,
            engine=self.plugin.engine.name,
            mirror=self.exporter.mirror,
        )
        self.sampler.start(measuring=warmup_s <= 0)
        self.exporter.sampler = self.sampler
        if warmup_s > 0:
            delay = max(0.0, record.window.measure_start_unix_s - time.time())
            self._timers.append(gevent.spawn_later(delay, self.sampler.mark_measuring))

    def on_run_closing(self, environment: Environment, run: RunDirectory, **_kwargs: Any) -> None:
        for timer in self._timers:
            timer.kill(block=False)
        self._timers = []
        sampler, self.sampler = self.sampler, None
        self.exporter.sampler = None
        if sampler is None:
            return
        section = sampler.close()
        self.exporter.section = section
        self.exporter.mirror.clear()
        if _run_record_has_section():
            run.update(**{RUN_RECORD_FIELD: section})

    def on_quit(self, **_kwargs: Any) -> None:
        self.exporter.close()

    def _sources(self) -> list[MetricsSource]:
        """The run's metrics sources: the plugin's server window's (each URL once), else
        the target's /metrics and the config's `metrics_endpoints`."""
        window = self.plugin.server
        if window is not None:
            return list(window.sources)
        settings = self.plugin.settings
        sources: list[MetricsSource] = [ScrapeSource("target", metrics_url(settings.base_url))]
        seen = {sources[0].url}
        for name, url in settings.config.metrics_endpoints.items():
            if url not in seen:
                seen.add(url)
                sources.append(ScrapeSource(name, url))
        return sources


def _run_record_has_section() -> bool:
    # Imported here: run.json's types import this package's section type.
    from kvswarm.runrecord import RunRecord

    return RUN_RECORD_FIELD in {field.name for field in dataclasses.fields(RunRecord)}
