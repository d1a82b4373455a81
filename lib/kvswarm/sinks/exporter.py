"""`Exporter`: kvswarm's Prometheus exporter, fed one request record at a time.

Everything it serves comes from prometheus-client (its registry, metric types, custom
collectors and WSGI app); kvswarm writes no exposition text of its own. One scrape of the
exporter shows, side by side:

- the load, from the records the results-owning process keeps (on a Locust master, every
  worker's records, so one scrape covers the fleet): latency histograms, request, failure
  and token counters, all labelled `scenario` and `mode`;
- the load generators (users, workers, requests in flight, CPU use), read at scrape time
  from callables (`LoadReadings`);
- the stack's own metrics, mirrored from every metrics endpoint with a `source` label
  (`MirrorCollector`, fed by `ServerSampler`).

`EXPORTED_METRICS` is the table of what it serves (README's Observability table and the
dashboard's checks come from it). Counters and histograms start from zero at each run
(`reset`), so at a run's end they equal that run's requests.csv exactly; Prometheus's
`rate()` treats the restart as a counter reset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kvswarm.errors import KvswarmError
from kvswarm.records import RequestRecord
from kvswarm.sinks.mirror import MirrorCollector
from kvswarm.sinks.server_metrics import ServerMetricsSection

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_PORT",
    "E2E_BUCKETS_S",
    "EXPORTED_METRICS",
    "TOKEN_GAP_BUCKETS_S",
    "TTFT_BUCKETS_S",
    "ExportedMetric",
    "Exporter",
    "LoadReadings",
    "ProcessCpu",
    "exported_metrics_markdown",
]

logger = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 9646
INF = float("inf")

# Bucket bounds in seconds, close to vLLM's own histograms so both read alike. TTFT: from
# a cached short prompt (a few ms) to a long cold prefill behind a queue (a minute).
TTFT_BUCKETS_S = (
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 60.0, INF,
)  # fmt: skip
# TPOT and ITL: one decode step, from about a millisecond (small model, small batch) to
# seconds (a stalled or overloaded decoder).
TOKEN_GAP_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, INF,
)  # fmt: skip
# E2E: a short completion (tens of ms) to a long generation (minutes).
E2E_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
    60.0, 90.0, 120.0, 180.0, 300.0, 600.0, INF,
)  # fmt: skip

LOAD_LABELS = ("scenario", "mode")


@dataclass(frozen=True)
class ExportedMetric:
    """One metric family the exporter serves, as Prometheus names its samples."""

    name: str
    kind: str  # histogram, counter, gauge or info
    labels: tuple[str, ...]
    meaning: str

    def sample_names(self) -> tuple[str, ...]:
        """The names its samples carry in a query (`_bucket`/`_sum`/`_count` of a histogram)."""
        if self.kind == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


def _latency(name: str, what: str) -> ExportedMetric:
    return ExportedMetric(name, "histogram", LOAD_LABELS, what + "; successful requests")


EXPORTED_METRICS: tuple[ExportedMetric, ...] = (
    _latency("kvswarm_ttft_seconds", "time to first token: start -> first chunk with text"),
    _latency("kvswarm_tpot_seconds", "time per output token: (E2E - TTFT) / (output_tokens - 1), "
             "requests with 2 or more output tokens"),
    _latency("kvswarm_itl_seconds", "inter-token latency, one observation per request: the mean "
             "of its gaps (as `--kv-itl-events mean`); exact gaps are in requests.csv"),
    _latency("kvswarm_e2e_seconds", "start -> end of stream"),
    ExportedMetric("kvswarm_requests_total", "counter", (*LOAD_LABELS, "status"),
                   "requests finished, by `status`: ok, failed or cancelled (rows of "
                   "requests.csv)"),
    ExportedMetric("kvswarm_failures_total", "counter", (*LOAD_LABELS, "category"),
                   "failed requests by failure `category` (connect, http_503, timeout_ttft...)"),
    ExportedMetric("kvswarm_prompt_tokens_total", "counter", LOAD_LABELS,
                   "prompt tokens of every request (`usage.prompt_tokens`)"),
    ExportedMetric("kvswarm_cached_tokens_total", "counter", LOAD_LABELS,
                   "prompt tokens the server reported cached (`cached_tokens`)"),
    ExportedMetric("kvswarm_output_tokens_total", "counter", LOAD_LABELS,
                   "output tokens of every request"),
    ExportedMetric("kvswarm_designed_hits_total", "counter", LOAD_LABELS,
                   "requests the workload designed to hit the prefix cache (`expected_hit`)"),
    ExportedMetric("kvswarm_users", "gauge", LOAD_LABELS, "users running, per scenario"),
    ExportedMetric("kvswarm_workers", "gauge", ("mode",),
                   "Locust workers connected (0 in a standalone run)"),
    ExportedMetric("kvswarm_in_flight_requests", "gauge", LOAD_LABELS,
                   "requests sent and not yet finished"),
    ExportedMetric("kvswarm_load_generator_cpu_ratio", "gauge", ("process", "mode"),
                   "CPU use of each load-generating process (1.0 = one core busy)"),
    ExportedMetric("kvswarm_run_info", "info", ("run_id", "mode", "engine", "target", "model"),
                   "the run being recorded (value 1)"),
)  # fmt: skip


def exported_metrics_markdown() -> str:
    """README's table of the exporter's metrics, generated from `EXPORTED_METRICS`."""
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for metric in EXPORTED_METRICS:
        labels = ", ".join(f"`{label}`" for label in metric.labels)
        lines.append(f"| `{metric.name}` | {metric.kind} | {labels} | {metric.meaning} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LoadReadings:
    """Where the load-generator gauges are read, at scrape time; None: not served.

    `users`: scenario -> users running; `workers`: workers connected; `in_flight`:
    scenario -> requests in flight; `cpu`: process name -> CPU share (1.0 = one core).
    A callable that raises is logged and its gauge left out of that scrape.
    """

    users: Callable[[], Mapping[str, float]] | None = None
    workers: Callable[[], float] | None = None
    in_flight: Callable[[], Mapping[str, float]] | None = None
    cpu: Callable[[], Mapping[str, float]] | None = None


class _LoadCollector(Collector):
    """The load-generator gauges, read from `LoadReadings` when Prometheus scrapes."""

    def __init__(self, readings: LoadReadings, mode: Callable[[], str]) -> None:
        self.readings = readings
        self._mode = mode

    def describe(self) -> list[Any]:
        # Read at scrape time only (the registry must not call the callables on register).
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mode = self._mode()
        per_scenario = (
            ("kvswarm_users", self.readings.users),
            ("kvswarm_in_flight_requests", self.readings.in_flight),
        )
        for name, read in per_scenario:
            values = _read(name, read)
            if values is not None:
                family = GaugeMetricFamily(name, _meaning(name), labels=LOAD_LABELS)
                for scenario, value in sorted(values.items()):
                    family.add_metric([scenario, mode], float(value))
                yield family
        workers = _read("kvswarm_workers", self.readings.workers)
        if workers is not None:
            name = "kvswarm_workers"
            family = GaugeMetricFamily(name, _meaning(name), labels=["mode"])
            family.add_metric([mode], float(workers))
            yield family
        cpu = _read("kvswarm_load_generator_cpu_ratio", self.readings.cpu)
        if cpu is not None:
            name = "kvswarm_load_generator_cpu_ratio"
            family = GaugeMetricFamily(name, _meaning(name), labels=["process", "mode"])
            for process, share in sorted(cpu.items()):
                family.add_metric([process, mode], float(share))
            yield family


def _read(name: str, read: Callable[[], Any] | None) -> Any:
    if read is None:
        return None
    try:
        return read()
    except Exception:  # a reading must never fail the whole scrape
        logger.exception("kvswarm exporter: reading %s failed", name)
        return None


def _meaning(name: str) -> str:
    return next(metric.meaning for metric in EXPORTED_METRICS if metric.name == name)


class _Series:
    """One (scenario, mode)'s children of every load metric, resolved once."""

    __slots__ = (
        "cached", "cancelled", "designed", "e2e", "exporter", "failed", "failures", "itl",
        "labels", "ok", "output", "prompt", "tpot", "ttft",
    )  # fmt: skip

    def __init__(self, exporter: Exporter, scenario: str, mode: str) -> None:
        labels = (scenario, mode)
        self.exporter = exporter
        self.labels = labels
        self.ttft = exporter.ttft.labels(*labels)
        self.tpot = exporter.tpot.labels(*labels)
        self.itl = exporter.itl.labels(*labels)
        self.e2e = exporter.e2e.labels(*labels)
        self.ok = exporter.requests.labels(*labels, "ok")
        self.failed = exporter.requests.labels(*labels, "failed")
        self.cancelled = exporter.requests.labels(*labels, "cancelled")
        self.prompt = exporter.prompt_tokens.labels(*labels)
        self.cached = exporter.cached_tokens.labels(*labels)
        self.output = exporter.output_tokens.labels(*labels)
        self.designed = exporter.designed_hits.labels(*labels)
        self.failures: dict[str, Any] = {}

    def add(self, record: RequestRecord) -> None:
        if record.ok:
            self.ok.inc()
            self._observe(record)
        elif record.cancelled:
            self.cancelled.inc()
        else:
            self.failed.inc()
            category = record.failure or "unknown"
            child = self.failures.get(category)
            if child is None:
                child = self.exporter.failures.labels(*self.labels, category)
                self.failures[category] = child
            child.inc()
        if record.prompt_tokens:
            self.prompt.inc(record.prompt_tokens)
        if record.cached_tokens:
            self.cached.inc(record.cached_tokens)
        if record.output_tokens:
            self.output.inc(record.output_tokens)
        if record.expected_hit:
            self.designed.inc()

    def _observe(self, record: RequestRecord) -> None:
        if record.ttft_s is not None:
            self.ttft.observe(record.ttft_s)
        if record.tpot_s is not None:
            self.tpot.observe(record.tpot_s)
        if record.e2e_s is not None:
            self.e2e.observe(record.e2e_s)
        gaps = record.itl_s
        if gaps:
            self.itl.observe(sum(gaps) / len(gaps))


class Exporter:
    """kvswarm's Prometheus exporter: `add(record)` per request, `serve(bind, port)` once.

    `registry` holds everything it serves; `mirror` re-exposes the stack's metrics (fed by
    a `ServerSampler`); `readings` are the load-generator gauges. `mode` labels the load
    gauges (the run's mode; records carry their own).
    """

    def __init__(self, readings: LoadReadings | None = None, mode: str = "") -> None:
        self.registry = CollectorRegistry()
        self.mode = mode
        self.ttft = self._histogram("kvswarm_ttft_seconds", TTFT_BUCKETS_S)
        self.tpot = self._histogram("kvswarm_tpot_seconds", TOKEN_GAP_BUCKETS_S)
        self.itl = self._histogram("kvswarm_itl_seconds", TOKEN_GAP_BUCKETS_S)
        self.e2e = self._histogram("kvswarm_e2e_seconds", E2E_BUCKETS_S)
        self.requests = self._counter("kvswarm_requests_total", (*LOAD_LABELS, "status"))
        self.failures = self._counter("kvswarm_failures_total", (*LOAD_LABELS, "category"))
        self.prompt_tokens = self._counter("kvswarm_prompt_tokens_total", LOAD_LABELS)
        self.cached_tokens = self._counter("kvswarm_cached_tokens_total", LOAD_LABELS)
        self.output_tokens = self._counter("kvswarm_output_tokens_total", LOAD_LABELS)
        self.designed_hits = self._counter("kvswarm_designed_hits_total", LOAD_LABELS)
        self.run_info = Info("kvswarm_run", _meaning("kvswarm_run_info"), registry=self.registry)
        self.readings = readings or LoadReadings()
        self.registry.register(_LoadCollector(self.readings, lambda: self.mode))
        self.mirror = MirrorCollector(own=frozenset(m.name for m in EXPORTED_METRICS))
        self.registry.register(self.mirror)
        self._series: dict[tuple[str, str], _Series] = {}
        self._server: Any = None
        self.url: str | None = None  # where it serves /metrics, once serving
        # run.json's `server_metrics` of the last run closed (set by `ExporterBinding`).
        self.section: ServerMetricsSection | None = None
        # The open run's sampler (set by `ExporterBinding`), for live window figures.
        self.sampler: Any = None

    def _histogram(self, name: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, _meaning(name), LOAD_LABELS, buckets=buckets, registry=self.registry)

    def _counter(self, name: str, labels: tuple[str, ...]) -> Counter:
        return Counter(name, _meaning(name), labels, registry=self.registry)

    # -- per request -----------------------------------------------------------------

    def add(self, record: RequestRecord) -> None:
        """Count one finished request (constant work: a dict look-up and a few increments)."""
        series = self._series.get((record.scenario, record.mode))
        if series is None:
            series = _Series(self, record.scenario, record.mode)
            self._series[(record.scenario, record.mode)] = series
        series.add(record)

    # -- per run ---------------------------------------------------------------------

    def reset(self, run_info: Mapping[str, str], mode: str) -> None:
        """A new run: every load metric back to zero, `kvswarm_run_info` set to this run."""
        for metric in (
            self.ttft, self.tpot, self.itl, self.e2e, self.requests, self.failures,
            self.prompt_tokens, self.cached_tokens, self.output_tokens, self.designed_hits,
        ):  # fmt: skip
            metric.clear()
        self._series.clear()
        self.mode = mode
        self.run_info.info(dict(run_info))

    # -- serving ---------------------------------------------------------------------

    def serve(self, bind: str = DEFAULT_BIND, port: int = DEFAULT_PORT) -> str:
        """Serve the registry at http://bind:port/metrics (prometheus-client's WSGI app on
        gevent's WSGI server); returns that URL. KvswarmError when the port is taken."""
        from gevent.pywsgi import WSGIServer

        server = WSGIServer((bind, port), _classic_text(make_wsgi_app(self.registry)), log=None)
        try:
            server.start()
        except OSError as exc:
            raise KvswarmError(
                f"--kv-exporter-port {port}: cannot listen on {bind}:{port} "
                f"({exc.strerror or exc}); choose another port, or 0 for no exporter"
            ) from None
        self._server = server
        host, bound_port = server.address[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}/metrics"
        return self.url

    def close(self) -> None:
        """Stop serving (the metrics stay readable in `registry`)."""
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None


def _classic_text(app: Callable[..., Any]) -> Callable[..., Any]:
    """`app`, always answering in the classic text format (0.0.4).

    Asked for OpenMetrics (as Prometheus asks by default), prometheus-client escapes metric
    names it considers legacy-invalid: vLLM's `vllm:` names would reach Prometheus as
    `vllm_...`, and the mirrored metrics would not be the ones the stack exports."""

    def classic(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ.pop("HTTP_ACCEPT", None)
        return app(environ, start_response)

    return classic


class ProcessCpu:
    """This process's CPU share between two readings (1.0 = one core busy), for a default
    `LoadReadings.cpu` where nothing better is wired."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._last = (time.monotonic(), time.process_time())

    def __call__(self) -> dict[str, float]:
        now = (time.monotonic(), time.process_time())
        wall = now[0] - self._last[0]
        share = (now[1] - self._last[1]) / wall if wall > 0 else 0.0
        self._last = now
        return {self.name: share}
