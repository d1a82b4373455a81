"""run.json: a run's identity, setup and outcome as typed, versioned sections.

One module writes and reads it. Each section belongs to the part of kvswarm that
produces it — the Locust glue (`locust`, `fleet`, `options`), the server-metrics window
(`server`: `kvswarm.metrics_sources.ServerReport`), the workloads (`workloads`: one
`kvswarm.workloads.WorkloadSummary` per scenario) — and is a dataclass with `to_dict` /
`from_dict`. `kvswarm.analysis` reads run.json through `read_run_record`, so a field is
named, typed and documented once, here or in its producer (README's run.json table is
generated from these types).

`schema_version` 2 is the first typed schema; a run.json without one (kvswarm 0.1's)
reads as version 1 with what can be recovered from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kvswarm.errors import KvswarmError
from kvswarm.metrics_sources.report import ServerReport
from kvswarm.sinks.server_metrics import ServerMetricsSection
from kvswarm.workloads.workload import WorkloadSummary

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "FleetSection",
    "LocustSection",
    "ProcessLoad",
    "RecordCounts",
    "ReplaySection",
    "RunRecord",
    "Window",
    "read_run_record",
    "run_record_markdown",
    "write_run_record",
]

SCHEMA_VERSION = 2
RUN_JSON = "run.json"
# running: the run is being measured (or its process died without closing it);
# finished: it ran to its end; aborted: kvswarm ended it for a problem the user must fix
# (`status_reason` says which); interrupted: a signal or a quit ended it early.
STATUSES = ("running", "finished", "aborted", "interrupted")


def _doc(text: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A dataclass field documented for README's run.json table."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class Window:
    """The measurement window: wall-clock seconds (Unix time)."""

    start_unix_s: float = _doc("when the run directory was opened (the test started)")
    end_unix_s: float | None = _doc("when the run was closed; null while running", None)
    warmup_s: float = _doc("seconds at the start left out of throughput and percentiles", 0.0)

    @property
    def measured_s(self) -> float | None:
        """Length of the window less the warm-up; None while running or when empty."""
        if self.end_unix_s is None or self.end_unix_s <= self.start_unix_s + self.warmup_s:
            return None
        return self.end_unix_s - self.start_unix_s - self.warmup_s

    @property
    def measure_start_unix_s(self) -> float:
        return self.start_unix_s + self.warmup_s


@dataclass(frozen=True)
class LocustSection:
    """How Locust ran the load (as given on the command line or in the start form)."""

    users: int | None = _doc("`-u`: peak users", None)
    spawn_rate: float | None = _doc("`-r`: users started per second", None)
    run_time_s: float | None = _doc("`-t` in seconds; null when unlimited", None)
    user_classes: tuple[str, ...] = _doc("the user classes that took part", ())
    tags: tuple[str, ...] = _doc("`--tags`, when given", ())
    exclude_tags: tuple[str, ...] = _doc("`--exclude-tags`, when given", ())
    headless: bool | None = _doc("true for `--headless`", None)


@dataclass(frozen=True)
class WorkerShipment:
    """What one Locust worker shipped to the master."""

    records: int = _doc("records received from the worker", 0)
    final_batch: bool = _doc("its final batch arrived (false: the worker was lost)", False)
    held_max_records: int = _doc(
        "most records that waited on the worker at once because the master was behind "
        "(0: the master kept up)",
        0,
    )
    behind_s: float = _doc("seconds the worker had records waiting for the master", 0.0)
    final_after_s: float = _doc(
        "seconds after the test stopped that its final batch arrived (long: the master "
        "was behind, and took in what waited on the worker)",
        0.0,
    )


@dataclass(frozen=True)
class FleetSection:
    """The processes that sent load."""

    distributed: bool = _doc("true when a master collected records from workers", False)
    workers: dict[str, WorkerShipment] = _doc("per worker id: records shipped", factory=dict)
    lost_workers: tuple[str, ...] = _doc("workers whose final batch never came", ())
    late_records: int = _doc("records that arrived after the run was closed (not kept)", 0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetSection:
        return cls(
            distributed=bool(data.get("distributed", False)),
            workers={k: WorkerShipment(**v) for k, v in (data.get("workers") or {}).items()},
            lost_workers=tuple(data.get("lost_workers") or ()),
            late_records=int(data.get("late_records") or 0),
        )


# When a load-generating process distorts the timing it measures (summary's warning).
LOOP_LAG_P99_LIMIT_MS = 1.0
CPU_SHARE_LIMIT = 0.9


@dataclass(frozen=True)
class ProcessLoad:
    """One load-generating process over the measured window: its own event-loop lag (how
    late a probe greenlet's 50 ms sleep woke up) and its CPU use."""

    role: str = _doc("(keyed by process) standalone, master or worker", "standalone")
    window_s: float = _doc("seconds measured (the test less the warm-up)", 0.0)
    cpu_s: float = _doc("user+system CPU seconds in the window", 0.0)
    cpu_share: float = _doc("`cpu_s / window_s`: 1.0 is one core fully busy", 0.0)
    loop_lag_samples: int = _doc("probe wake-ups measured", 0)
    loop_lag_p50_ms: float = _doc("median wake-up lateness, ms", 0.0)
    loop_lag_p99_ms: float = _doc("99th percentile wake-up lateness, ms", 0.0)
    loop_lag_max_ms: float = _doc("largest wake-up lateness, ms", 0.0)
    clock_offset_ms: float | None = _doc(
        "a worker: the master's wall clock minus this one's, ms (from the ping with the "
        "smallest round trip; the fleet's timeline is moved onto this clock by it)",
        None,
    )
    clock_rtt_ms: float | None = _doc(
        "a worker: that ping's round trip, ms (the offset is within half of it)", None
    )

    @property
    def distorts_timing(self) -> bool:
        """Its loop lag or CPU use is enough to make TTFT and ITL late (a master, which
        takes no timestamps, never does: a busy master only delays collecting)."""
        if self.role == "master":
            return False
        return self.loop_lag_p99_ms > LOOP_LAG_P99_LIMIT_MS or self.cpu_share > CPU_SHARE_LIMIT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessLoad:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# A replay whose send lag p99 exceeds its scenario's `lag_bound_ms` is marked degraded.
DEFAULT_LAG_BOUND_MS = 50.0
# Server prompt tokens this far from the trace's input tokens (as a share) get a warning.
PROMPT_TOKENS_TOLERANCE = 0.02
# Realised and theoretical hit rates this close (in points) agree.
HIT_RATE_AGREEMENT_POINTS = 2.0


@dataclass(frozen=True)
class ReplaySection:
    """One trace scenario's replay: the rows sent against the selection and the schedule,
    the prompt lengths the server counted against the trace's, and the prefix hit rate
    the server realised against the trace's theoretical one for the rows sent."""

    trace: str = _doc("the trace file", "")
    block_tokens: int = _doc("tokens per hash id", 512)
    rows_selected: int = _doc("rows of the selection (start_s, end_s, max_rows)", 0)
    rows_sent: int = _doc("distinct rows sent", 0)
    rows_sent_twice: int = _doc("records beyond one per row (0 in a sound replay)", 0)
    output_control: str = _doc(
        "how each row asked for its output_length: max_tokens, with ignore_eos and "
        "min_tokens where sent",
        "max_tokens",
    )
    lag_p50_ms: float | None = _doc("send lag (actual - scheduled send) p50, ms", None)
    lag_p90_ms: float | None = _doc("send lag p90, ms", None)
    lag_p99_ms: float | None = _doc("send lag p99, ms", None)
    lag_bound_ms: float = _doc("the scenario's lag_bound_ms", DEFAULT_LAG_BOUND_MS)
    degraded: bool = _doc("lag p99 above lag_bound_ms: the trace's timing was not kept", False)
    trace_input_tokens: int = _doc(
        "sum of input_length over the rows sent whose prompt_tokens the server reported", 0
    )
    server_prompt_tokens: int | None = _doc("sum of prompt_tokens over those rows", None)
    prompt_tokens_difference: float | None = _doc(
        "`server_prompt_tokens / trace_input_tokens - 1` (a chat template adds a little)",
        None,
    )
    theoretical_hit_rate: float = _doc(
        "share of the rows sent's input tokens an infinite prefix cache could serve, the "
        "rows taken in trace order",
        0.0,
    )
    server_hit_rate: float | None = _doc(
        "sum of cached_tokens / sum of prompt_tokens over the successful rows that report both",
        None,
    )
    server_counter_hit_rate: float | None = _doc(
        "the server's own counters over the window (run.json server.cached_share; every "
        "scenario of the run)",
        None,
    )
    gap_points: float | None = _doc("`(server_hit_rate - theoretical_hit_rate) * 100`", None)

    @property
    def prompt_tokens_off(self) -> bool:
        """The server counted prompts more than 2% longer or shorter than the trace says."""
        d = self.prompt_tokens_difference
        return d is not None and abs(d) > PROMPT_TOKENS_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplaySection:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RecordCounts:
    """Rows of requests.csv by outcome."""

    total: int = _doc("every row", 0)
    ok: int = _doc("successful requests", 0)
    failed: int = _doc("failed requests (any category)", 0)
    cancelled: int = _doc("requests the test itself stopped mid-flight", 0)


@dataclass(frozen=True)
class RunRecord:
    """What run.json holds."""

    run_id: str = _doc("the run directory's name")
    status: str = _doc("running, finished, aborted or interrupted", "running")
    status_reason: str = _doc("why a run was aborted or interrupted", "")
    mode: str = _doc("deployment mode under test", "non_disaggregated")
    window: Window = _doc("measurement window", factory=lambda: Window(0.0))
    started_at: str = _doc("ISO 8601 start time (UTC)", "")
    ended_at: str | None = _doc("ISO 8601 end time (UTC); null while running", None)
    target: str = _doc("the base URL requests went to", "")
    engine: str = _doc("engine profile: vllm, sim, llama.cpp, sglang or openai", "openai")
    endpoint: str = _doc("chat or completions", "chat")
    model: str = _doc("model name sent in requests", "")
    seed: int = _doc("seed of every shared prefix", 0)
    config_path: str | None = _doc("the YAML config given, if any", None)
    config: dict[str, Any] = _doc("the whole validated config, secrets removed", factory=dict)
    options: dict[str, Any] = _doc(
        "kvswarm's `--kv-*` options as the test used them (secrets removed)", factory=dict
    )
    cache_reset: dict[str, str] | None = _doc(
        "`--kv-reset-cache`: whether the prefix cache was reset at the start (`status`: "
        "reset, not_supported or failed, with `detail`); null: the cache was left as it was",
        None,
    )
    cache_prime: dict[str, Any] | None = _doc(
        "`--kv-prime`: the prime pass of this process (a fleet's workers each log theirs): "
        "`requests` sent, `prefixes` primed per scenario, `failed` by category, `seconds`; "
        "null: no prime pass",
        None,
    )
    locust: LocustSection = _doc("Locust's load settings", factory=LocustSection)
    fleet: FleetSection = _doc("workers and what they shipped", factory=FleetSection)
    server: ServerReport | None = _doc(
        "the server over the measurement window (after the warm-up), from its metrics; "
        "null when the run closed before it was read",
        None,
    )
    server_metrics: ServerMetricsSection | None = _doc(
        "every metrics source sampled every few seconds over the measured window "
        "(server_metrics.jsonl holds the samples): counter deltas and rates, histogram "
        "quantiles, gauge ranges, and the derived hit rates and Mooncake figures with "
        "their formulas",
        None,
    )
    workloads: dict[str, WorkloadSummary] = _doc(
        "per scenario: configured and designed reuse, prompt lengths achieved",
        factory=dict,
    )
    tokens: dict[str, Any] = _doc("how each process sized prompts in tokens", factory=dict)
    records: RecordCounts = _doc("rows of requests.csv by outcome", factory=RecordCounts)
    load_generator: dict[str, ProcessLoad] = _doc(
        "per load-generating process (`local`, `master`, worker ids): its event-loop lag "
        "and CPU use over the measured window",
        factory=dict,
    )
    replay: dict[str, ReplaySection] = _doc(
        "per trace scenario: rows sent, send lag and whether the replay was degraded, prompt "
        "tokens against the trace's, realised against theoretical prefix hit rate",
        factory=dict,
    )
    load_host: str = _doc("host name of the process that wrote the run", "")
    platform: str = _doc("its platform string", "")
    argv: tuple[str, ...] = _doc("its command line, secret values redacted", ())
    versions: dict[str, str] = _doc("kvswarm, Python, Locust and client library versions",
                                    factory=dict)  # fmt: skip
    schema_version: int = _doc("version of this schema", SCHEMA_VERSION)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["server"] = self.server.to_dict() if self.server is not None else None
        data["server_metrics"] = (
            self.server_metrics.to_dict() if self.server_metrics is not None else None
        )
        data["workloads"] = {name: summary.to_dict() for name, summary in self.workloads.items()}
        data["replay"] = {name: section.to_dict() for name, section in self.replay.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = RUN_JSON) -> RunRecord:
        """Read a run.json's data; unknown keys from a newer kvswarm are ignored."""
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise KvswarmError(
                f"{source}: schema_version {version!r} is newer than this kvswarm reads "
                f"({SCHEMA_VERSION}); upgrade kvswarm"
            )
        if version == 1:
            data = _from_version_1(data)
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        try:
            values["window"] = Window(**(values.get("window") or {"start_unix_s": 0.0}))
            values["locust"] = _tuples(LocustSection, values.get("locust") or {})
            values["fleet"] = FleetSection.from_dict(values.get("fleet") or {})
            values["records"] = RecordCounts(**(values.get("records") or {}))
            values["load_generator"] = {
                name: ProcessLoad.from_dict(load)
                for name, load in (values.get("load_generator") or {}).items()
            }
            values["argv"] = tuple(values.get("argv") or ())
            server = values.get("server")
            values["server"] = ServerReport.from_dict(server) if server else None
            sampled = values.get("server_metrics")
            values["server_metrics"] = ServerMetricsSection.from_dict(sampled) if sampled else None
            values["workloads"] = {
                name: WorkloadSummary.from_dict(summary)
                for name, summary in (values.get("workloads") or {}).items()
            }
            values["replay"] = {
                name: ReplaySection.from_dict(section)
                for name, section in (values.get("replay") or {}).items()
            }
            return cls(**values)
        except (TypeError, KeyError, ValueError) as exc:
            raise KvswarmError(f"{source}: not a kvswarm run.json ({exc})") from None

    def with_changes(self, **changes: Any) -> RunRecord:
        from dataclasses import replace

        return replace(self, **changes)


def _tuples(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    return cls(**values)


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """kvswarm 0.1's untyped run.json: the fields that moved (its `server` section had
    another shape and is not carried over)."""
    window = dict(data.get("window") or {})
    window = {k: window[k] for k in ("start_unix_s", "end_unix_s", "warmup_s") if k in window}
    records = dict(data.get("records") or {})
    upgraded = {
        **data,
        "window": window or {"start_unix_s": 0.0},
        "records": {k: records.get(k, 0) for k in ("total", "ok", "failed", "cancelled")},
        "fleet": {
            "distributed": bool(data.get("distributed")),
            "workers": data.get("workers") or {},
            "lost_workers": data.get("lost_workers") or [],
        },
        "engine": data.get("engine") or "openai",
        "run_id": data.get("run_id") or "",
        "server": None,
        "schema_version": 1,
    }
    return upgraded


def write_run_record(directory: Path, record: RunRecord) -> None:
    """run.json, replaced atomically so a reader never sees half a file."""
    target = directory / RUN_JSON
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record.to_dict(), indent=2, default=str) + "\n", "utf-8")
    os.replace(temporary, target)


def read_run_record(directory: Path) -> RunRecord | None:
    """The run.json of a run directory; None when there is none."""
    path = directory / RUN_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KvswarmError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise KvswarmError(f"{path}: expected a JSON object at the top level")
    return RunRecord.from_dict(data, str(path))


def run_record_markdown() -> str:
    """README's run.json table, generated from the record types."""
    lines = ["| key | meaning |", "| --- | --- |"]

    def add(cls: type, prefix: str) -> None:
        for f in fields(cls):
            doc = f.metadata.get("doc") or _PRODUCER_DOCS.get(f"{prefix}{f.name}", "")
            lines.append(f"| `{prefix}{f.name}` | {doc} |")
            if f.name in _NESTED:
                add(_NESTED[f.name], f"{prefix}{f.name}.")

    add(RunRecord, "")
    return "\n".join(lines) + "\n"


_NESTED: dict[str, type] = {
    "window": Window,
    "locust": LocustSection,
    "fleet": FleetSection,
    "records": RecordCounts,
    "load_generator": ProcessLoad,
    "server": ServerReport,
    "workloads": WorkloadSummary,
    "replay": ReplaySection,
}
# The sections other modules produce, in README's words (their types are the contract).
_PRODUCER_DOCS = {
    "server.engine": "the engine profile that read the metrics",
    "server.cache_semantics": "what a cache hit means on that engine",
    "server.cached_share": "share of prompt tokens the server reports as served from its "
    "prefix cache over the window (null: not reported)",
    "server.cached_share_formula": "the engine's formula for it, in its metric names",
    "server.cached_share_sources": "the metrics sources it was summed over (PD: prefillers)",
    "server.external_cached_share": "share of queried tokens loaded through a KV connector "
    "(vLLM + LMCache / Mooncake)",
    "server.kv_store": "the KV store that served the run, where the stack says (`mooncake`, "
    "`in-process`)",
    "server.prompt_tokens_by_source": "per metrics source, the window's prompt tokens by "
    "where their KV came from (vLLM: `local_compute`, `local_cache_hit`, "
    "`external_kv_transfer`; a PD prefiller and decoder apart)",
    "server.sources": "per metrics source: `url`, `warning`, counter `deltas` over the "
    "window, gauge values at its `end`",
    "server.warnings": "sources that could not be read, or were read once for two names",
    "workloads.scenario": "(keyed by scenario) the scenario's name",
    "workloads.type": "its workload type",
    "workloads.requests": "requests the workload made, in every process",
    "workloads.expected_hits": "those designed to hit (the prefix was sent before)",
    "workloads.configured_reuse_ratio": "the config's `reuse_ratio`",
    "workloads.realised_reuse_ratio": "`expected_hits / requests`: the designed share",
    "workloads.prompt_tokens": "achieved prompt lengths against their targets",
}
