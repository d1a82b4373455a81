"""The per-request record: the contract between measuring and analysing.

One `RequestRecord` per request sent, success or failure, becomes one row of
`results/<run-id>/requests.csv`. Durations are seconds from one monotonic clock; the only
wall-clock value is `start_unix_s`, for lining rows up with server metrics and logs.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvswarm.client import StreamResult
    from kvswarm.engines import RequestTimings

# Failure categories: every failed request lands in exactly one.
FAILURE_CATEGORIES = (
    "connect",  # could not connect, or could not send the request
    "http_<status>",  # the server answered with an HTTP error status (e.g. http_503)
    "timeout_ttft",  # no generated text within timeouts.ttft_s of the request start
    "timeout_idle",  # mid-stream, no data for timeouts.idle_s
    "timeout_total",  # the response not over timeouts.total_s after the request start
    "disconnect",  # the stream was cut before its end
    "bad_chunk",  # unparseable HTTP, SSE, UTF-8 or JSON
    "server_error",  # the server sent an error object in the stream
    "empty",  # the response completed without generated text
)
# Not a failure: the test itself stopped the request (users stopped, run ended).
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as kvswarm measured it.

    Latencies follow `vllm bench serve`: `ttft_s` start -> first chunk carrying generated
    text; `itl_s` the gaps between successive text chunks; `tpot_s` =
    (e2e - ttft) / (output_tokens - 1) when output_tokens >= 2; `e2e_s` start -> end of
    stream. For a non-streamed request `streamed` is False and ttft_s == e2e_s.
    `output_tokens_source` is "usage" when the server reported usage, else "chunks"
    (the count of text-bearing chunks).
    """

    request_id: str
    worker_id: str
    user_id: int
    scenario: str
    mode: str
    endpoint: str
    streamed: bool
    start_unix_s: float
    # Open loop: when the schedule meant it to go (wall clock), and how late it went.
    scheduled_unix_s: float | None = None
    send_lag_s: float | None = None
    # Trace replay: the row of the trace file the request replays.
    trace_row: int | None = None
    # --kv-steps: the step (0-based) of the load plan the request was sent in.
    step: int | None = None
    prefix_id: str = ""
    prefix_tokens: int = 0
    expected_hit: bool = False
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    created_cache_tokens: int | None = None
    output_tokens: int = 0
    output_tokens_source: str = "chunks"
    text_chunks: int = 0
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    itl_s: tuple[float, ...] = ()
    status_code: int | None = None
    finish_reason: str | None = None
    ok: bool = False
    failure: str = ""
    error: str = ""
    server_queue_s: float | None = None
    server_prefill_s: float | None = None
    server_transfer_s: float | None = None
    server_decode_s: float | None = None
    # Whether it met the config's SLOs (`slo`): succeeded within every limit set.
    met_slo: bool = False
    # A warm-up request (`results.warmup_s` / `warmup_requests`): in no figure.
    warmup: bool = False

    @property
    def cancelled(self) -> bool:
        return self.failure == CANCELLED

    @property
    def failed(self) -> bool:
        return not self.ok and not self.cancelled


@dataclass(frozen=True, slots=True)
class _ItlCells:
    """One request's ITL summary, computed once per row."""

    mean: str = ""
    p50: str = ""
    p99: str = ""
    max: str = ""
    all: str = ""


@dataclass(frozen=True)
class Column:
    """One column of requests.csv: the writer, the reader and README's table come from it.

    `kind` is the column's type as read back (`str`, `int`, `float`, `bool`: written 0/1);
    `nullable` columns are empty when not measured or not reported (read as NA);
    `cell` turns a record (and its ITL summary) into the text of the cell;
    `added_later` columns came after the first requests.csv: files written before lack
    them and read them back as empty.
    """

    name: str
    kind: str
    unit: str
    meaning: str
    cell: Callable[[RequestRecord, _ItlCells], str] = field(repr=False, compare=False)
    nullable: bool = False
    added_later: bool = False


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000.0:.3f}"


def _opt_float(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _opt(value: Any) -> str:
    return "" if value is None else str(value)


def _flag(value: bool) -> str:
    return "1" if value else "0"


# requests.csv, in column order. ITL is written in full (milliseconds, `;`-separated) so
# exact ITL percentiles can be recomputed from the file, plus a summary for reading.
COLUMNS: tuple[Column, ...] = (
    Column("request_id", "str", "", "`<worker>-<user>-<sequence>`, also sent as the "
           "`X-Request-Id` header", lambda r, i: r.request_id),
    Column("worker_id", "str", "", "`local` in a standalone run, the Locust worker id in a "
           "distributed one", lambda r, i: r.worker_id),
    Column("user_id", "int", "", "the simulated user within its process",
           lambda r, i: str(r.user_id)),
    Column("scenario", "str", "", "scenario name (from the config)", lambda r, i: r.scenario),
    Column("mode", "str", "", "deployment mode: `pd_disaggregated` or `non_disaggregated`",
           lambda r, i: r.mode),
    Column("endpoint", "str", "", "`chat` or `completions`", lambda r, i: r.endpoint),
    Column("streamed", "bool", "0/1", "0 for a non-streamed request (TTFT = E2E)",
           lambda r, i: _flag(r.streamed)),
    Column("start_unix_s", "float", "s", "wall-clock request start, for lining up with "
           "server logs and metrics", lambda r, i: f"{r.start_unix_s:.6f}"),
    Column("scheduled_unix_s", "float", "s", "open loop (`--kv-arrival`): when the arrival "
           "schedule meant the request to start; empty in a closed loop",
           lambda r, i: _opt_float(r.scheduled_unix_s, 6), nullable=True, added_later=True),
    Column("send_lag_ms", "float", "ms", "open loop: start - scheduled start (every user "
           "busy at the arrival: the request went when one freed up)",
           lambda r, i: _ms(r.send_lag_s), nullable=True, added_later=True),
    Column("trace_row", "int", "", "trace replay: the row of the trace file (0-based) the "
           "request replays; empty otherwise", lambda r, i: _opt(r.trace_row), nullable=True,
           added_later=True),
    Column("step", "int", "", "`--kv-steps`: the step of the load plan (0-based) the request "
           "was sent in (open loop: scheduled in); empty without steps",
           lambda r, i: _opt(r.step), nullable=True, added_later=True),
    Column("prefix_id", "str", "", "the reusable prefix the request begins with (pool item "
           "or conversation); empty when unique from its first token", lambda r, i: r.prefix_id),
    Column("prefix_tokens", "int", "tokens", "that prefix's length",
           lambda r, i: str(r.prefix_tokens)),
    Column("expected_hit", "bool", "0/1", "whether the design expected the server to hold "
           "the prefix already (a designed hit)", lambda r, i: _flag(r.expected_hit)),
    Column("prompt_tokens", "int", "tokens", "`usage.prompt_tokens` (or the engine's own "
           "count)", lambda r, i: _opt(r.prompt_tokens), nullable=True),
    Column("cached_tokens", "int", "tokens", "`usage.prompt_tokens_details.cached_tokens` "
           "(or the engine's own count)", lambda r, i: _opt(r.cached_tokens), nullable=True),
    Column("created_cache_tokens", "int", "tokens", "`usage.prompt_tokens_details."
           "created_cache_tokens` (vLLM): prompt tokens this request computed and wrote to "
           "the prefix cache (PD: on the prefiller)", lambda r, i: _opt(r.created_cache_tokens),
           nullable=True, added_later=True),
    Column("output_tokens", "int", "tokens", "`usage.completion_tokens`, else text-bearing "
           "chunks", lambda r, i: str(r.output_tokens)),
    Column("output_tokens_source", "str", "", "`usage` or `chunks`: where output_tokens "
           "came from", lambda r, i: r.output_tokens_source),
    Column("text_chunks", "int", "", "SSE chunks that carried generated text",
           lambda r, i: str(r.text_chunks)),
    Column("ttft_ms", "float", "ms", "start -> first chunk carrying generated text",
           lambda r, i: _ms(r.ttft_s), nullable=True),
    Column("tpot_ms", "float", "ms", "(E2E - TTFT) / (output_tokens - 1), for "
           "output_tokens >= 2", lambda r, i: _ms(r.tpot_s), nullable=True),
    Column("e2e_ms", "float", "ms", "start -> end of stream", lambda r, i: _ms(r.e2e_s),
           nullable=True),
    Column("itl_mean_ms", "float", "ms", "mean of this request's inter-token gaps",
           lambda r, i: i.mean, nullable=True),
    Column("itl_p50_ms", "float", "ms", "median gap", lambda r, i: i.p50, nullable=True),
    Column("itl_p99_ms", "float", "ms", "99th percentile gap", lambda r, i: i.p99,
           nullable=True),
    Column("itl_max_ms", "float", "ms", "longest gap", lambda r, i: i.max, nullable=True),
    Column("itl_ms", "str", "ms", "every inter-token gap of the request, `;`-separated",
           lambda r, i: i.all),
    Column("status_code", "int", "", "HTTP status", lambda r, i: _opt(r.status_code),
           nullable=True),
    Column("finish_reason", "str", "", "the last `finish_reason` of the stream",
           lambda r, i: r.finish_reason or ""),
    Column("ok", "bool", "0/1", "the request succeeded", lambda r, i: _flag(r.ok)),
    Column("failure", "str", "", "failure category, `cancelled`, or empty",
           lambda r, i: r.failure),
    Column("error", "str", "", "the failure's message", lambda r, i: r.error),
    Column("server_queue_ms", "float", "ms", "the engine's own per-request queue time, when "
           "it reports one", lambda r, i: _ms(r.server_queue_s), nullable=True),
    Column("server_prefill_ms", "float", "ms", "the engine's own prefill time (PD: on the "
           "prefiller)", lambda r, i: _ms(r.server_prefill_s), nullable=True),
    Column("server_transfer_ms", "float", "ms", "PD: the KV transfer from prefiller to "
           "decoder, as the stack reports it", lambda r, i: _ms(r.server_transfer_s),
           nullable=True),
    Column("server_decode_ms", "float", "ms", "the engine's own decode time",
           lambda r, i: _ms(r.server_decode_s), nullable=True),
    Column("met_slo", "bool", "0/1", "the request succeeded within every SLO of the config "
           "(`slo.ttft_ms`, `slo.tpot_ms`, `slo.e2e_ms` when set)",
           lambda r, i: _flag(r.met_slo), added_later=True),
    Column("warmup", "bool", "0/1", "a warm-up request (before `results.warmup_s` ended, or "
           "one of the first `results.warmup_requests`): in requests.csv, in no figure",
           lambda r, i: _flag(r.warmup), added_later=True),
)  # fmt: skip
CSV_COLUMNS: tuple[str, ...] = tuple(column.name for column in COLUMNS)


def _percentile_sorted(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


_NO_ITL = _ItlCells()


def _itl_cells(itl: Sequence[float]) -> _ItlCells:
    if not itl:
        return _NO_ITL
    ordered = sorted(itl)
    return _ItlCells(
        mean=_ms(sum(itl) / len(itl)),
        p50=_ms(_percentile_sorted(ordered, 0.5)),
        p99=_ms(_percentile_sorted(ordered, 0.99)),
        max=_ms(ordered[-1]),
        all=_gaps_ms(itl),
    )


_GAP_FORMATS: dict[int, str] = {}


def _gaps_ms(itl: Sequence[float]) -> str:
    """Every gap in ms with 3 decimals, `;`-separated: one `%` over a format made once per
    length (half the CPU of a format per gap; a 64-token row renders on every request)."""
    count = len(itl)
    template = _GAP_FORMATS.get(count)
    if template is None:
        template = ";".join(["%.3f"] * count)
        if len(_GAP_FORMATS) < 4096:
            _GAP_FORMATS[count] = template
    return template % tuple([gap * 1000.0 for gap in itl])


def to_row(record: RequestRecord) -> list[str]:
    """The record as requests.csv cells, in `COLUMNS` order."""
    itl = _itl_cells(record.itl_s)
    return [column.cell(record, itl) for column in COLUMNS]


def columns_markdown() -> str:
    """README's requests.csv table, generated from `COLUMNS`."""
    lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
    for column in COLUMNS:
        kind = column.kind + (", empty when not reported" if column.nullable else "")
        lines.append(f"| `{column.name}` | {kind} | {column.unit} | {column.meaning} |")
    return "\n".join(lines) + "\n"


def record_to_dict(record: RequestRecord) -> dict[str, Any]:
    """Plain data for shipping between processes (msgpack/JSON friendly)."""
    data = asdict(record)
    data["itl_s"] = list(record.itl_s)
    return data


_FIELD_NAMES = frozenset(f.name for f in fields(RequestRecord))


def record_from_dict(data: dict[str, Any]) -> RequestRecord:
    """Inverse of `record_to_dict`; unknown keys from a newer sender are ignored."""
    known = {key: value for key, value in data.items() if key in _FIELD_NAMES}
    known["itl_s"] = tuple(known.get("itl_s", ()))
    return RequestRecord(**known)


class RowText:
    """requests.csv rows as text, exactly as `RecordWriter` writes them.

    A Locust worker renders its records' rows here and ships the text; the master appends
    it as it is (`RecordWriter.append_rows`), so the formatting is spread over the workers.
    """

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")

    def add(self, record: RequestRecord) -> None:
        self._writer.writerow(to_row(record))

    def add_header(self) -> None:
        self._writer.writerow(CSV_COLUMNS)

    def take(self) -> str:
        """The rows added since the last `take`."""
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


class RecordWriter:
    """Appends records to requests.csv as they arrive.

    Rows are buffered in memory and written out when `flush_interval_s` has passed since
    the last flush (checked on every append) and on `flush()`/`close()`, so a killed run
    keeps all but the last few seconds, and a crash mid-run never leaves a half row.
    """

    def __init__(self, path: Path, flush_interval_s: float = 2.0) -> None:
        self.path = path
        self.count = 0
        self._flush_interval_s = flush_interval_s
        self._pending = RowText()
        self._pending_rows: list[str] = []
        new_file = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if new_file:
            self._pending.add_header()
        self._last_flush = time.monotonic()

    def append(self, record: RequestRecord) -> None:
        self._pending.add(record)
        self.count += 1
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def append_rows(self, text: str, count: int) -> None:
        """Append `count` rows already rendered by a `RowText` (whole rows, in order)."""
        if text:
            self._pending_rows.append(self._pending.take() + text)
        self.count += count
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def extend(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            self.append(record)

    def flush(self) -> None:
        self._pending_rows.append(self._pending.take())
        text = "".join(self._pending_rows)
        self._pending_rows = []
        if text:
            # Flushed to the OS, not fsync'ed: a killed process loses nothing, and an
            # fsync would block every greenlet (and every timestamp) for its duration.
            self._file.write(text)
            self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        self._file.close()


def build_record(
    result: StreamResult, timings: RequestTimings | None = None, **identity: Any
) -> RequestRecord:
    """A request's record from what the client measured, what the engine reported about
    the request (`timings`, from its engine profile) and who sent it.

    Prompt tokens: usage in the stream, else the engine's own count. Cached tokens: the
    engine's own per-request count where it gives one (llama.cpp's `timings.cache_n`,
    the simulator's header, the prefiller's hit behind kvswarm's vLLM PD proxy, where
    the decoder's usage also counts the KV it loaded), else usage."""
    prompt, cached = result.prompt_tokens, result.cached_tokens
    created = result.created_cache_tokens
    if timings is not None:
        prompt = prompt if prompt is not None else timings.prompt_tokens
        cached = timings.cached_tokens if timings.cached_tokens is not None else cached
        if timings.created_cache_tokens is not None:
            created = timings.created_cache_tokens
    return RequestRecord(
        streamed=result.streamed,
        start_unix_s=result.start_unix_s,
        prompt_tokens=prompt,
        cached_tokens=cached,
        created_cache_tokens=created,
        output_tokens=result.output_tokens,
        output_tokens_source=result.output_tokens_source,
        text_chunks=result.text_chunks,
        ttft_s=result.ttft_s,
        tpot_s=result.tpot_s,
        e2e_s=result.e2e_s,
        itl_s=tuple(result.itl_s),
        status_code=result.status_code,
        finish_reason=result.finish_reason,
        ok=result.ok,
        failure=result.failure,
        error=result.error,
        server_queue_s=timings.queue_s if timings else None,
        server_prefill_s=timings.prefill_s if timings else None,
        server_transfer_s=timings.transfer_s if timings else None,
        server_decode_s=timings.decode_s if timings else None,
        **identity,
    )
