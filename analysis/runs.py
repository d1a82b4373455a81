"""Loading what a run left on disk into typed pandas frames.

A kvswarm run directory (`results/<run-id>/`: requests.csv, run.json) loads as a `Run`
with one row per request; a Locust `--csv` prefix alone (`<prefix>_stats.csv`,
`_stats_history.csv`, `_failures.csv`) loads as a `Run` without per-request rows and with
Locust's own tables (`Run.locust`), so reports show what those files allow. Nothing here
imports Locust: result folders copied from anywhere load the same.

Columns get explicit dtypes from the one column spec (`kvswarm.records.COLUMNS`): text
columns that name a category (scenario, mode, failure, ...) are pandas categoricals, flags
are bool, counts nullable Int64, durations float64. Inter-token gaps stay as requests.csv
wrote them (`itl_ms`, one text cell per request) until a caller asks for them
(`Run.itl`, `itl_values`). A missing or malformed file or column is a `KvswarmError` naming
the file and the column.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvswarm.analysis.locustcsv import LocustCsv, is_locust_prefix, read_locust_csv
from kvswarm.errors import KvswarmError
from kvswarm.records import COLUMNS, CSV_COLUMNS
from kvswarm.runrecord import RunRecord, read_run_record

__all__ = [
    "CATEGORIES",
    "ItlGaps",
    "REQUESTS_CSV",
    "Run",
    "TORN_LAST_LINE",
    "itl_values",
    "load_run",
    "open_run",
    "read_requests",
]

REQUESTS_CSV = "requests.csv"
SUMMARY_TXT = "summary.txt"

# Text columns with few distinct values: categoricals (small, fast to group by).
CATEGORIES = frozenset(
    {"scenario", "mode", "failure", "endpoint", "output_tokens_source", "finish_reason",
     "worker_id"}
)  # fmt: skip
_DTYPES = {"str": "string", "int": "Int64", "float": "float64", "bool": "Int8"}
_ROWS_PER_PARSE = 200_000
# Columns reports never read: left out of the per-scenario frames (`Run.scenarios`).
_UNREPORTED = ("itl_ms", "request_id", "error", "prefix_id", "itl_p50_ms", "itl_p99_ms",
               "itl_max_ms", "finish_reason", "user_id", "endpoint")  # fmt: skip


def _dtype(name: str, kind: str) -> str:
    if name == "itl_ms":
        return "object"  # parsed on demand (`Run.itl`); Python strings cost least here
    return "category" if name in CATEGORIES else _DTYPES[kind]


@dataclass(frozen=True)
class ItlGaps:
    """Every inter-token gap of a run: `row` (the request's position in `Run.requests`)
    and `gap_ms`, one element per gap."""

    row: np.ndarray
    gap_ms: np.ndarray

    def of(self, rows: pd.DataFrame) -> np.ndarray:
        """The gaps (ms) of the given requests (a subset of the run's rows)."""
        if not len(self.row):
            return np.empty(0)
        wanted = np.zeros(int(self.row.max()) + 1, dtype=bool)
        positions = rows.index.to_numpy()
        wanted[positions[positions < len(wanted)]] = True
        return self.gap_ms[wanted[self.row]]


@dataclass(frozen=True, eq=False)
class Run:
    """One run's data: its record (run.json) and its requests (one row each, indexed by
    position in requests.csv).

    `locust` holds Locust's own `--csv` tables when the run was loaded from a prefix; such a
    run has no request rows (`has_requests` is False)."""

    path: Path
    record: RunRecord
    requests: pd.DataFrame
    locust: LocustCsv | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.record.run_id or self.path.name

    @property
    def has_requests(self) -> bool:
        return self.locust is None

    @property
    def meta(self) -> dict[str, Any]:
        """run.json as plain data (prefer the typed `record`)."""
        return self.record.to_dict()

    @property
    def slo(self) -> dict[str, float] | None:
        """The run's SLOs ({"ttft_ms", "tpot_ms"}) from its config, if recorded."""
        slo = self.record.config.get("slo")
        return slo if slo and "ttft_ms" in slo and "tpot_ms" in slo else None

    @property
    def warmup_s(self) -> float:
        return self.record.window.warmup_s

    @property
    def window_s(self) -> float | None:
        """Length of the measurement window in seconds (warm-up excluded), when the run
        recorded one. Warm-up by requests moves its start to the last warm-up request's."""
        window = self.record.window
        last = self._last_warmup_start_unix_s
        if window.measured_s is None or window.end_unix_s is None or last is None:
            return window.measured_s
        return max(0.0, window.end_unix_s - max(window.measure_start_unix_s, last))

    @property
    def measured(self) -> pd.DataFrame:
        """The requests outside the warm-up (`results.warmup_s`, and requests.csv's
        `warmup` flag where it was written): what throughput and percentiles are
        computed from."""
        rows = self.requests
        flagged = self.warmup_flags
        if flagged is not None and flagged.any():
            rows = rows[~flagged]
        if not self.warmup_s:
            return rows
        return rows[rows["start_unix_s"] >= self.record.window.measure_start_unix_s]

    @cached_property
    def warmup_flags(self) -> pd.Series | None:
        """requests.csv's `warmup` as booleans; None for a file written before it."""
        if "warmup" not in self.requests.columns or self.requests["warmup"].isna().all():
            return None
        return self.requests["warmup"].fillna(0).astype(bool)

    @cached_property
    def _last_warmup_start_unix_s(self) -> float | None:
        flagged = self.warmup_flags
        if flagged is None or not flagged.any():
            return None
        return float(self.requests.loc[flagged, "start_unix_s"].max())

    @cached_property
    def scenarios(self) -> dict[str, pd.DataFrame]:
        """The measured requests of each scenario, by name (sorted), computed once, without
        the text columns no report reads (the ITL gaps are `itl`)."""
        rows = self.measured
        rows = rows.drop(columns=[c for c in _UNREPORTED if c in rows.columns])
        codes = rows["scenario"].astype("category")
        return {
            str(name): rows[(codes == name).to_numpy(dtype=bool)]
            for name in sorted(str(n) for n in codes.dropna().unique())
        }

    @cached_property
    def itl(self) -> ItlGaps:
        """Every inter-token gap, parsed from `itl_ms` on first use."""
        return parse_itl(self.requests["itl_ms"])


def _parse_chunk(cells: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """One slice of non-empty `itl_ms` cells: gaps per cell (counted from the separators in
    the joined bytes) and every gap (parsed by pandas' C reader, one value a line)."""
    joined = "\n".join(cells.to_numpy(dtype=object)).encode("ascii")
    raw = np.frombuffer(joined, dtype=np.uint8)
    separators = np.flatnonzero(raw == ord(";"))
    ends = np.append(np.flatnonzero(raw == ord("\n")), len(raw))
    counts = np.diff(np.searchsorted(separators, ends), prepend=0) + 1
    values = pd.read_csv(
        io.BytesIO(joined.replace(b";", b"\n")), header=None, dtype=np.float64,
        engine="c", names=["gap"],
    )["gap"].to_numpy()  # fmt: skip
    return counts, values


def parse_itl(cells: pd.Series) -> ItlGaps:
    """`itl_ms` cells (`;`-separated ms) as one flat array of gaps with their row positions,
    parsed a slice of rows at a time so the joined text stays small."""
    rows: list[np.ndarray] = []
    gaps: list[np.ndarray] = []
    for start in range(0, len(cells), _ROWS_PER_PARSE):
        chunk = cells.iloc[start : start + _ROWS_PER_PARSE]
        chunk = chunk[chunk.notna() & (chunk != "")]
        if chunk.empty:
            continue
        try:
            counts, values = _parse_chunk(chunk.astype(str))
        except (ValueError, UnicodeEncodeError):
            counts, values = np.empty(0), np.empty(1)
        if len(values) != counts.sum() or np.isnan(values).any():
            raise KvswarmError("requests.csv: column itl_ms: a cell is not `;`-separated numbers")
        rows.append(np.repeat(chunk.index.to_numpy().astype(np.int32), counts))
        gaps.append(values)
    if not gaps:
        return ItlGaps(np.empty(0, dtype=np.int32), np.empty(0))
    return ItlGaps(np.concatenate(rows), np.concatenate(gaps))


def itl_values(requests: pd.DataFrame) -> pd.Series:
    """Every inter-token gap (ms) of the given rows, one value per gap."""
    return pd.Series(parse_itl(requests["itl_ms"]).gap_ms, dtype=float)


def _malformed(path: Path) -> str:
    """Which column of a requests.csv pandas could not type: re-read as text, find the
    first cell that is not of its column's kind."""
    try:
        text = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as exc:
        return f"{path}: not a CSV file ({exc})"
    for column in COLUMNS:
        if column.name not in text.columns or column.kind == "str":
            continue
        cells = text[column.name]
        cells = cells[cells != ""]
        numbers = pd.to_numeric(cells, errors="coerce")
        bad = cells[numbers.isna()]
        if column.kind in ("int", "bool") and bad.empty:
            # a float where an integer belongs: a fraction, inf, or beyond int64
            numbers = numbers.astype(float)
            whole = np.isfinite(numbers) & (numbers == numbers.round()) & (numbers.abs() < 2**63)
            bad = cells[~whole]
        if not bad.empty:
            line = int(bad.index[0]) + 2  # 1-based, after the header
            return (
                f"{path}: column {column.name}: line {line}: {bad.iloc[0]!r} is not "
                f"{'an' if column.kind == 'int' else 'a'} {column.kind}"
            )
    return f"{path}: not a kvswarm requests.csv"


def read_requests(path: Path) -> pd.DataFrame:
    """requests.csv as a typed DataFrame (dtypes from the column spec; flags as bool,
    categories as categoricals), with `itl_ms` kept as text (see `Run.itl`)."""
    dtypes = {column.name: _dtype(column.name, column.kind) for column in COLUMNS}
    try:
        header = pd.read_csv(path, nrows=0).columns
    except FileNotFoundError:
        raise KvswarmError(f"{path}: no such file (is this a kvswarm results directory?)") from None
    except pd.errors.EmptyDataError:
        raise KvswarmError(f"{path}: empty file (expected a header row)") from None
    absent = [c for c in COLUMNS if c.name not in header and c.added_later]
    missing = [c.name for c in COLUMNS if c.name not in header and not c.added_later]
    if missing:
        raise KvswarmError(f"{path}: column {missing[0]} is missing (not a kvswarm requests.csv?)")
    present = {name: dtype for name, dtype in dtypes.items() if name in header}
    whole = _whole_lines(path)
    try:
        # numpy warns while pandas tries a float like 1e30 as an integer, before it fails
        with np.errstate(invalid="ignore"):
            frame = pd.read_csv(
                path if whole is None else whole,
                dtype=present,
                keep_default_na=False,
                na_values={column.name: [""] for column in COLUMNS if column.nullable},
            )
    except (pd.errors.ParserError, ValueError, TypeError, OverflowError):
        raise KvswarmError(_malformed(path)) from None
    for column in absent:
        frame[column.name] = pd.Series(pd.NA, index=frame.index, dtype=dtypes[column.name])
    frame = frame[[*CSV_COLUMNS, *(name for name in frame.columns if name not in CSV_COLUMNS)]]
    for column in COLUMNS:
        if column.kind == "bool":
            frame[column.name] = frame[column.name].fillna(0).astype(bool)
    frame.attrs[TORN_LAST_LINE] = whole is not None
    return frame


# `DataFrame.attrs` key: requests.csv ended in a cut-off line, which was left out.
TORN_LAST_LINE = "torn_last_line"


def _whole_lines(path: Path) -> io.BytesIO | None:
    """None when the file ends with a line break (the usual case); else its text up to
    the last one. Rows are written whole, so only a run killed while writing leaves a cut
    last line behind, and only that line."""
    with open(path, "rb") as handle:
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        handle.seek(0)
        text = handle.read()
    return io.BytesIO(text[: text.rfind(b"\n") + 1])


def load_run(directory: str | Path) -> Run:
    """A results directory, as written by a kvswarm run."""
    path = Path(directory)
    if not path.is_dir():
        raise KvswarmError(f"{path}: no such results directory")
    record = read_run_record(path) or RunRecord(run_id=path.name)
    return Run(path=path, record=record, requests=read_requests(path / REQUESTS_CSV))


def _empty_requests() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c.name: pd.Series([], dtype=_dtype(c.name, c.kind).replace("Int8", "bool"))
            for c in COLUMNS
        }
    )


def open_run(source: str | Path, mode: str | None = None) -> Run:
    """A kvswarm run directory or a Locust `--csv` prefix (`results/x` for
    `results/x_stats.csv`, or the `_stats.csv` file itself).

    `mode` names the deployment mode where the files do not (a Locust prefix), and
    overrides nothing a run.json records."""
    path = Path(source)
    if path.is_dir() and (path / REQUESTS_CSV).exists():
        run = load_run(path)
        if mode and not read_run_record(path):
            return Run(run.path, run.record.with_changes(mode=mode), run.requests)
        return run
    if is_locust_prefix(path):
        tables = read_locust_csv(path)
        record = RunRecord(
            run_id=tables.prefix.name,
            mode=mode or "unknown",
            status="finished",
            window=tables.window(),
        )
        return Run(path=tables.prefix, record=record, requests=_empty_requests(), locust=tables)
    if path.is_dir():
        raise KvswarmError(f"{path / REQUESTS_CSV}: no such file (is this a kvswarm results "
                           "directory or a Locust --csv prefix?)")  # fmt: skip
    raise KvswarmError(f"{path}: no such results directory or Locust --csv prefix "
                       f"({path}_stats.csv)")  # fmt: skip
