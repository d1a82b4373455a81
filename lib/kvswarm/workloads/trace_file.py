"""Request traces in the Mooncake format: reading, validating, selecting and writing rows.

A trace is JSON Lines (optionally gzip-compressed, by a `.gz` name), one request per line,
as published with Mooncake (FAST'25) and replayed by AIPerf, guidellm, `vllm bench serve`
and SGLang's bench:

- `timestamp`: arrival time in milliseconds from the trace's start (>= 0, non-decreasing);
- `input_length`: prompt tokens; `output_length`: tokens to generate (`max_tokens`);
- `hash_ids`: one id per block of `block_tokens` prompt tokens (512 in Mooncake's traces);
  equal ids are equal blocks, so equal leading ids are a prefix a KV cache can reuse.

Optional fields other tools accept: `session_id` (a conversation), `delay` (milliseconds
after the session's previous request), `text_input` or `messages` (the prompt itself, sent
verbatim instead of text made from `hash_ids`). Other keys are ignored.

Every row is checked when loaded; the first problem is a `TraceError` naming the file, the
line and the field (`trace.jsonl: line 7: hash_ids: ...`), which the CLI prints in one line
with exit code 2. In particular the ids must match `input_length` at the block size, which
catches a block size that is not the trace's (16 for a 512-token trace makes every prompt
32 times too short).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from kvswarm.errors import KvswarmError

__all__ = [
    "DEFAULT_BLOCK_TOKENS",
    "Trace",
    "TraceError",
    "TraceRow",
    "load_trace",
    "rebased",
    "select_rows",
    "write_trace",
]

DEFAULT_BLOCK_TOKENS = 512  # Mooncake's


class TraceError(KvswarmError):
    """A trace file cannot be read or holds an invalid row: `file: line N: field: why`."""


@dataclass(frozen=True)
class TraceRow:
    """One request of a trace.

    - `index`: 0-based position in the file (kept by `select_rows`, so a sample's rows
      still name the row they came from); `line`: 1-based line in the file;
    - `timestamp_ms`: arrival in milliseconds from the trace's start (None when the trace
      has no timestamps);
    - `input_length`, `output_length`: prompt and output tokens;
    - `hash_ids`: one id per block (empty for a row that carries its own text);
    - `session_id`, `delay_ms`, `text_input`, `messages`: the optional fields, None if absent.
    """

    index: int
    line: int
    timestamp_ms: float | None
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...] = ()
    session_id: str | None = None
    delay_ms: float | None = None
    text_input: str | None = None
    messages: tuple[dict[str, str], ...] | None = None

    @property
    def has_text(self) -> bool:
        """Whether the row carries its prompt (`text_input` or `messages`)."""
        return self.text_input is not None or self.messages is not None

    def to_json(self) -> dict[str, Any]:
        """The row as a trace line's object (field names of the format)."""
        data: dict[str, Any] = {}
        if self.timestamp_ms is not None:
            data["timestamp"] = _number(self.timestamp_ms)
        data["input_length"] = self.input_length
        data["output_length"] = self.output_length
        if self.hash_ids or not self.has_text:
            data["hash_ids"] = list(self.hash_ids)
        optional = (
            ("session_id", self.session_id),
            ("delay", None if self.delay_ms is None else _number(self.delay_ms)),
            ("text_input", self.text_input),
            ("messages", None if self.messages is None else list(self.messages)),
        )
        data.update((key, value) for key, value in optional if value is not None)
        return data


@dataclass(frozen=True)
class Trace:
    """The rows of one trace file, in file order, and the block size they were checked at."""

    path: str
    block_tokens: int
    rows: tuple[TraceRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def timed(self) -> bool:
        """Whether the rows carry timestamps."""
        return bool(self.rows) and self.rows[0].timestamp_ms is not None

    @property
    def duration_s(self) -> float:
        """Seconds from the first row's timestamp to the last's (0 without timestamps)."""
        if not self.timed:
            return 0.0
        return (self.rows[-1].timestamp_ms - self.rows[0].timestamp_ms) / 1000.0


def load_trace(
    path: str | Path, block_tokens: int = DEFAULT_BLOCK_TOKENS, *, max_rows: int | None = None
) -> Trace:
    """Read and check every row of a trace file (the first `max_rows` rows when given).

    Raises `TraceError` for an unreadable file, an empty one, or the first invalid row.
    """
    if block_tokens <= 0:
        raise ValueError("block_tokens must be > 0")
    path = Path(path)
    checker = _RowChecker(str(path), block_tokens)
    rows: list[TraceRow] = []
    for line_number, line in _lines(path):
        if max_rows is not None and len(rows) >= max_rows:
            break
        if line.strip():
            rows.append(checker.row(len(rows), line_number, line))
    if not rows:
        raise TraceError(f"{path}: no rows (expected one JSON object per line)")
    return Trace(str(path), block_tokens, tuple(rows))


def select_rows(
    trace: Trace,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    max_rows: int | None = None,
    time_scale: float = 1.0,
) -> tuple[TraceRow, ...]:
    """The rows a replay sends: arrivals at `timestamp * time_scale` from the first row's,
    kept when in [`start_s`, `end_s`) of that scaled timeline, then the first `max_rows`.

    Rows keep their `index` and their timestamps as written (scale them with
    `rebased`). A trace without timestamps ignores `start_s`/`end_s`.
    """
    if time_scale <= 0:
        raise ValueError("time_scale must be > 0")
    rows: Sequence[TraceRow] = trace.rows
    if trace.timed and (start_s > 0 or end_s is not None):
        first = trace.rows[0].timestamp_ms
        start_ms = start_s * 1000.0
        end_ms = math.inf if end_s is None else end_s * 1000.0
        rows = [r for r in rows if start_ms <= (r.timestamp_ms - first) * time_scale < end_ms]
    if max_rows is not None:
        rows = rows[:max_rows]
    return tuple(rows)


def rebased(
    rows: Iterable[TraceRow], *, time_scale: float = 1.0, start_s: float = 0.0
) -> Iterator[TraceRow]:
    """The rows with timestamps scaled by `time_scale` and `start_s` taken off, so a slice
    of a trace is a trace of its own that starts near 0 (`delay` is scaled too)."""
    first: float | None = None
    for row in rows:
        if row.timestamp_ms is None:
            yield _scaled_delay(row, time_scale)
            continue
        if first is None:
            first = row.timestamp_ms
        at = (row.timestamp_ms - first) * time_scale - start_s * 1000.0
        yield replace(_scaled_delay(row, time_scale), timestamp_ms=_rounded(at))


def write_trace(rows: Iterable[TraceRow], path: str | Path) -> int:
    """Write rows as a trace file (gzip when `path` ends in .gz); the number written."""
    path = Path(path)
    lines = [orjson.dumps(row.to_json()) + b"\n" for row in rows]
    data = b"".join(lines)
    try:
        if path.suffix == ".gz":
            data = gzip.compress(data, mtime=0)
        path.write_bytes(data)
    except OSError as exc:
        raise TraceError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return len(lines)


# --- reading --------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise TraceError(f"{path}: trace file not found") from None
    except (OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise TraceError(f"{path}: cannot read trace ({reason})") from None
    return enumerate(data.split(b"\n"), start=1)


class _RowChecker:
    """Turns lines into rows, checking each field and the order of timestamps."""

    def __init__(self, path: str, block_tokens: int) -> None:
        self.path = path
        self.block_tokens = block_tokens
        self.last_timestamp: float | None = None
        self.timed: bool | None = None  # settled by the first row

    def row(self, index: int, line: int, raw: bytes) -> TraceRow:
        self.line = line
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self.error("", f"not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise self.error("", f"expected a JSON object, got {_kind(data)}")
        text_input = self.optional_str(data, "text_input")
        messages = self.messages(data)
        has_text = text_input is not None or messages is not None
        hash_ids = self.hash_ids(data, required=not has_text)
        input_length = self.count(data, "input_length", required=not has_text, minimum=1)
        if hash_ids:
            self.check_blocks(hash_ids, input_length)
        return TraceRow(
            index=index,
            line=line,
            timestamp_ms=self.timestamp(data),
            input_length=input_length,
            output_length=self.count(data, "output_length", required=True, minimum=0),
            hash_ids=hash_ids,
            session_id=self.session_id(data),
            delay_ms=self.number(data, "delay"),
            text_input=text_input,
            messages=messages,
        )

    def error(self, field: str, why: str) -> TraceError:
        where = f"{field}: " if field else ""
        return TraceError(f"{self.path}: line {self.line}: {where}{why}")

    def timestamp(self, data: dict[str, Any]) -> float | None:
        value = self.number(data, "timestamp")
        if self.timed is None:
            self.timed = value is not None
        elif self.timed != (value is not None):
            had = "earlier rows have one" if self.timed else "earlier rows have none"
            why = "missing" if value is None else "present"
            raise self.error("timestamp", f"{why}, but {had} (all rows or none)")
        if value is None:
            return None
        if self.last_timestamp is not None and value < self.last_timestamp:
            raise self.error(
                "timestamp",
                f"{_number(value)} is before the previous row's {_number(self.last_timestamp)} "
                "(timestamps must not decrease)",
            )
        self.last_timestamp = value
        return value

    def number(self, data: dict[str, Any], key: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {_show(value)}")
        if not value >= 0 or math.isinf(value):
            raise self.error(key, f"must be a finite number >= 0, got {_show(value)}")
        return value

    def count(self, data: dict[str, Any], key: str, *, required: bool, minimum: int) -> int:
        value = data.get(key)
        if value is None:
            if required:
                raise self.error(key, "required field is missing")
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {_show(value)}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def hash_ids(self, data: dict[str, Any], *, required: bool) -> tuple[int, ...]:
        value = data.get("hash_ids")
        if value is None:
            if required:
                raise self.error(
                    "hash_ids", "required field is missing (or give text_input or messages)"
                )
            return ()
        if not isinstance(value, list):
            raise self.error("hash_ids", f"must be a list of integers, got {_show(value)}")
        for position, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise self.error(
                    f"hash_ids[{position}]", f"must be an integer >= 0, got {_show(item)}"
                )
        if required and not value:
            raise self.error("hash_ids", "must hold at least one id")
        return tuple(value)

    def check_blocks(self, hash_ids: tuple[int, ...], input_length: int) -> None:
        blocks, size = len(hash_ids), self.block_tokens
        low, high = (blocks - 1) * size + 1, blocks * size
        if low <= input_length <= high:
            return
        needed = -(-input_length // size)
        raise self.error(
            "hash_ids",
            f"{blocks} ids of {size} tokens hold {low}..{high} prompt tokens, but "
            f"input_length is {input_length} ({needed} ids needed; is the block size "
            "the trace's? --block-tokens / block_tokens)",
        )

    def optional_str(self, data: dict[str, Any], key: str) -> str | None:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_show(value)}")
        return value

    def session_id(self, data: dict[str, Any]) -> str | None:
        value = data.get("session_id")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error("session_id", f"must be a string or an integer, got {_show(value)}")
        return str(value)

    def messages(self, data: dict[str, Any]) -> tuple[dict[str, str], ...] | None:
        value = data.get("messages")
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self.error("messages", f"must be a non-empty list, got {_show(value)}")
        for position, message in enumerate(value):
            ok = isinstance(message, dict) and isinstance(message.get("role"), str)
            if not ok or not isinstance(message.get("content"), str):
                raise self.error(
                    f"messages[{position}]",
                    f"must be an object with string 'role' and 'content', got {_show(message)}",
                )
        return tuple(value)


def _scaled_delay(row: TraceRow, time_scale: float) -> TraceRow:
    if row.delay_ms is None or time_scale == 1.0:
        return row
    return replace(row, delay_ms=_rounded(row.delay_ms * time_scale))


def _rounded(ms: float) -> float:
    """Milliseconds to the microsecond, so scaled timestamps print short."""
    return round(max(0.0, ms), 3)


def _number(value: float) -> float | int:
    """An integral float as an int (Mooncake's timestamps are integers)."""
    return int(value) if float(value).is_integer() else value


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", dict: "an object"}.get(type(value), _show(value))


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    return orjson.dumps(value).decode() if value is None or isinstance(value, bool) else repr(value)
