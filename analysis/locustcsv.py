"""Locust's own `--csv` files (`<prefix>_stats.csv`, `_stats_history.csv`,
`_failures.csv`) as typed frames, for runs that left nothing else.

kvswarm fires one Locust request per LLM request (type `LLM`, response time = E2E,
content size = output tokens) and one each for `TTFT`, `TPOT` and `ITL`, named by
scenario. Locust keeps rounded response-time buckets, so percentiles from these files are
approximate, and there is no per-request value to bootstrap from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kvswarm.errors import KvswarmError
from kvswarm.runrecord import Window

__all__ = ["LOCUST_PERCENTILES", "LocustCsv", "is_locust_prefix", "read_locust_csv"]

STATS = "_stats.csv"
HISTORY = "_stats_history.csv"
FAILURES = "_failures.csv"
# Locust's percentile columns that reports use, by kvswarm's percentile.
LOCUST_PERCENTILES = {50: "50%", 90: "90%", 95: "95%", 99: "99%", 100: "100%"}
_STATS_COLUMNS = {
    "Type": "category",
    "Name": "category",
    "Request Count": "int64",
    "Failure Count": "int64",
    "Average Response Time": "float64",
    "Average Content Size": "float64",
    "Requests/s": "float64",
    **{column: "float64" for column in LOCUST_PERCENTILES.values()},
}
_HISTORY_COLUMNS = {
    "Timestamp": "int64",
    "User Count": "int64",
    "Type": "string",
    "Name": "string",
    "Requests/s": "float64",
    "Failures/s": "float64",
    "Total Request Count": "int64",
    "Total Failure Count": "int64",
    **{column: "float64" for column in ("50%", "90%", "95%", "99%")},
}
_FAILURE_COLUMNS = {"Method": "string", "Name": "string", "Error": "string", "Occurrences": "int64"}


def _prefix(path: Path) -> Path:
    text = str(path)
    for suffix in (HISTORY, STATS):
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return path


def is_locust_prefix(path: Path) -> bool:
    """Whether `path` is a Locust `--csv` prefix (or its `_stats.csv` file)."""
    return Path(f"{_prefix(path)}{STATS}").is_file()


def _read(path: Path, columns: dict[str, str], required: bool = True) -> pd.DataFrame | None:
    if not path.is_file():
        if required:
            raise KvswarmError(f"{path}: no such file")
        return None
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise KvswarmError(f"{path}: empty file (expected Locust's header row)") from None
    missing = [name for name in columns if name not in header]
    if missing:
        raise KvswarmError(f"{path}: column {missing[0]} is missing (not a Locust --csv file?)")
    frame = pd.read_csv(path, usecols=list(columns), na_values=["N/A"])
    for name, dtype in columns.items():
        try:
            frame[name] = frame[name].astype(dtype)
        except (ValueError, TypeError):
            numbers = pd.to_numeric(frame[name], errors="coerce")
            if dtype.startswith("int") and numbers.notna().all():
                frame[name] = numbers.astype(dtype)
                continue
            if dtype == "float64":
                bad = frame[name][numbers.isna() & frame[name].notna()]
                if bad.empty:
                    frame[name] = numbers
                    continue
                raise KvswarmError(
                    f"{path}: column {name}: {bad.iloc[0]!r} is not a number"
                ) from None
            raise KvswarmError(f"{path}: column {name}: not {dtype} values") from None
    return frame


@dataclass(frozen=True)
class LocustCsv:
    """One Locust `--csv` prefix: `stats` (one row per type and name, plus Aggregated),
    `history` (one row per type and name every few seconds; may be absent),
    `failures` (per error; may be absent)."""

    prefix: Path
    stats: pd.DataFrame
    history: pd.DataFrame | None
    failures: pd.DataFrame | None

    def window(self) -> Window:
        """The run's window as the history's first and last timestamps."""
        if self.history is None or self.history.empty:
            return Window(0.0)
        stamps = self.history["Timestamp"]
        return Window(float(stamps.min()), float(stamps.max()))

    def rows(self, request_type: str) -> pd.DataFrame:
        """The stats rows of one kvswarm request type (`LLM`, `TTFT`, `TPOT`, `ITL`), one
        per scenario."""
        stats = self.stats
        return stats[(stats["Type"] == request_type) & (stats["Name"] != "Aggregated")]


def read_locust_csv(path: Path) -> LocustCsv:
    """Read a Locust `--csv` prefix (or its `_stats.csv`)."""
    prefix = _prefix(Path(path))
    stats = _read(Path(f"{prefix}{STATS}"), _STATS_COLUMNS)
    assert stats is not None
    return LocustCsv(
        prefix=prefix,
        stats=stats,
        history=_read(Path(f"{prefix}{HISTORY}"), _HISTORY_COLUMNS, required=False),
        failures=_read(Path(f"{prefix}{FAILURES}"), _FAILURE_COLUMNS, required=False),
    )
