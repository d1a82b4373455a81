"""Loading a run directory (`results/<run-id>/`) into pandas."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvswarm.errors import KvswarmError
from kvswarm.records import COLUMNS, CSV_COLUMNS
from kvswarm.runrecord import RunRecord, read_run_record

REQUESTS_CSV = "requests.csv"
SUMMARY_TXT = "summary.txt"

# pandas dtypes of requests.csv's columns, from the one column spec (`kvswarm.records`).
_DTYPES = {"str": "string", "int": "Int64", "float": "float64", "bool": "Int8"}


@dataclass(frozen=True)
class Run:
    """One run's data: its record (run.json) and its requests (one row each)."""

    path: Path
    record: RunRecord
    requests: pd.DataFrame

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
        recorded one."""
        return self.record.window.measured_s

    @property
    def measured(self) -> pd.DataFrame:
        """The requests that started after the warm-up (`results.warmup_s`): what
        throughput and percentiles are computed from."""
        if not self.warmup_s:
            return self.requests
        start = self.record.window.measure_start_unix_s
        return self.requests[self.requests["start_unix_s"] >= start]


def read_requests(path: Path) -> pd.DataFrame:
    """requests.csv as a typed DataFrame (dtypes from the column spec; flags as bool),
    with `itl_ms` kept as text (see `itl_values`)."""
    dtypes = {column.name: _DTYPES[column.kind] for column in COLUMNS}
    try:
        frame = pd.read_csv(
            path,
            dtype=dtypes,
            keep_default_na=False,
            na_values={column.name: [""] for column in COLUMNS if column.nullable},
        )
    except FileNotFoundError:
        raise KvswarmError(f"{path}: no such file (is this a kvswarm results directory?)") from None
    except (pd.errors.ParserError, ValueError, TypeError) as exc:
        raise KvswarmError(f"{path}: not a kvswarm requests.csv ({exc})") from None
    missing = [name for name in CSV_COLUMNS if name not in frame.columns]
    if missing:
        raise KvswarmError(f"{path}: column {missing[0]} is missing (not a kvswarm requests.csv?)")
    for column in COLUMNS:
        if column.kind == "bool":
            frame[column.name] = frame[column.name].fillna(0).astype(bool)
    return frame


def itl_values(requests: pd.DataFrame) -> pd.Series:
    """Every inter-token gap (ms) of the given rows, one value per gap."""
    text = requests["itl_ms"].fillna("")
    text = text[text != ""]
    if text.empty:
        return pd.Series([], dtype=float)
    return pd.Series(np.fromstring(";".join(text), sep=";"), dtype=float)


def load_run(directory: str | Path) -> Run:
    """A results directory, as written by a kvswarm run."""
    path = Path(directory)
    if not path.is_dir():
        raise KvswarmError(f"{path}: no such results directory")
    record = read_run_record(path) or RunRecord(run_id=path.name)
    return Run(path=path, record=record, requests=read_requests(path / REQUESTS_CSV))
