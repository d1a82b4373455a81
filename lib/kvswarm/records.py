"""The per-request record: the contract between measuring and analysing.

One `RequestRecord` per request sent, success or failure, becomes one row of
`results/<run-id>/requests.csv`. Durations are seconds from one monotonic clock; the only
wall-clock value is `start_unix_s`, for lining rows up with server metrics and logs.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvswarm.client import StreamResult

# Failure categories: every failed request lands in exactly one.
FAILURE_CATEGORIES = (
    "connect",  # could not connect, or the connection failed before any response byte
    "http_<status>",  # the server answered with an HTTP error status (e.g. http_503)
    "timeout_ttft",  # no generated text within timeouts.ttft_s of the request start
    "timeout_idle",  # mid-stream, no data for timeouts.idle_s
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
    prefix_id: str = ""
    prefix_tokens: int = 0
    expected_hit: bool = False
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
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
    server_prefill_s: float | None = None
    server_decode_s: float | None = None
    server_transfer_s: float | None = None

    @property
    def cancelled(self) -> bool:
        return self.failure == CANCELLED

    @property
    def failed(self) -> bool:
        return not self.ok and not self.cancelled


# requests.csv columns, in order. ITL is written in full (milliseconds, `;`-separated)
# so exact ITL percentiles can be recomputed from the file, plus a summary for reading.
CSV_COLUMNS: tuple[str, ...] = (
    "request_id",
    "worker_id",
    "user_id",
    "scenario",
    "mode",
    "endpoint",
    "streamed",
    "start_unix_s",
    "prefix_id",
    "prefix_tokens",
    "expected_hit",
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "output_tokens_source",
    "text_chunks",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "itl_mean_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "itl_max_ms",
    "itl_ms",
    "status_code",
    "finish_reason",
    "ok",
    "failure",
    "error",
    "server_prefill_ms",
    "server_decode_ms",
    "server_transfer_ms",
)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000.0:.3f}"


def _opt(value: Any) -> str:
    return "" if value is None else str(value)


def _percentile_sorted(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def to_row(record: RequestRecord) -> list[str]:
    """The record as requests.csv cells, in `CSV_COLUMNS` order."""
    itl = record.itl_s
    if itl:
        ordered = sorted(itl)
        itl_cells = [
            _ms(sum(itl) / len(itl)),
            _ms(_percentile_sorted(ordered, 0.5)),
            _ms(_percentile_sorted(ordered, 0.99)),
            _ms(ordered[-1]),
            ";".join(f"{gap * 1000.0:.3f}" for gap in itl),
        ]
    else:
        itl_cells = ["", "", "", "", ""]
    return [
        record.request_id,
        record.worker_id,
        str(record.user_id),
        record.scenario,
        record.mode,
        record.endpoint,
        "1" if record.streamed else "0",
        f"{record.start_unix_s:.6f}",
        record.prefix_id,
        str(record.prefix_tokens),
        "1" if record.expected_hit else "0",
        _opt(record.prompt_tokens),
        _opt(record.cached_tokens),
        str(record.output_tokens),
        record.output_tokens_source,
        str(record.text_chunks),
        _ms(record.ttft_s),
        _ms(record.tpot_s),
        _ms(record.e2e_s),
        *itl_cells,
        _opt(record.status_code),
        record.finish_reason or "",
        "1" if record.ok else "0",
        record.failure,
        record.error,
        _ms(record.server_prefill_s),
        _ms(record.server_decode_s),
        _ms(record.server_transfer_s),
    ]


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
        self._pending = io.StringIO()
        self._pending_writer = csv.writer(self._pending, lineterminator="\n")
        new_file = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if new_file:
            self._pending_writer.writerow(CSV_COLUMNS)
        self._last_flush = time.monotonic()

    def append(self, record: RequestRecord) -> None:
        self._pending_writer.writerow(to_row(record))
        self.count += 1
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def extend(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            self.append(record)

    def flush(self) -> None:
        text = self._pending.getvalue()
        if text:
            # Flushed to the OS, not fsync'ed: a killed process loses nothing, and an
            # fsync would block every greenlet (and every timestamp) for its duration.
            self._file.write(text)
            self._file.flush()
            self._pending.seek(0)
            self._pending.truncate()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        self._file.close()


def build_record(result: StreamResult, **identity: Any) -> RequestRecord:
    """A request's record from what the client measured and who sent it."""
    # llama.cpp's `timings` carry the cache hit even when the stream has no usage.
    timings = result.server_timings or {}
    prefill_ms = timings.get("prompt_ms")
    decode_ms = timings.get("predicted_ms")
    cached = result.cached_tokens if result.cached_tokens is not None else timings.get("cache_n")
    prompt = result.prompt_tokens
    if prompt is None and "prompt_n" in timings and "cache_n" in timings:
        prompt = timings["prompt_n"] + timings["cache_n"]
    return RequestRecord(
        streamed=result.streamed,
        start_unix_s=result.start_unix_s,
        prompt_tokens=prompt,
        cached_tokens=cached,
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
        server_prefill_s=prefill_ms / 1000.0 if prefill_ms is not None else None,
        server_decode_s=decode_ms / 1000.0 if decode_ms is not None else None,
        **identity,
    )
