"""Loading a run directory (`results/<run-id>/`) into pandas."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvswarm.errors import KvswarmError
from kvswarm.records import CSV_COLUMNS

REQUESTS_CSV = "requests.csv"
RUN_JSON = "run.json"
SUMMARY_TXT = "summary.txt"

_NULLABLE_COUNTS = ("prompt_tokens", "cached_tokens", "status_code")
_DTYPES = {
    "request_id": "string",
    "worker_id": "string",
    "scenario": "string",
    "mode": "string",
    "endpoint": "string",
    "prefix_id": "string",
    "output_tokens_source": "string",
    "itl_ms": "string",
    "finish_reason": "string",
    "failure": "string",
    "error": "string",
}


@dataclass(frozen=True)
class Run:
    """One run's data: its metadata (run.json) and its requests (one row each)."""

    path: Path
    meta: dict[str, Any]
    requests: pd.DataFrame

    @property
    def slo(self) -> dict[str, float] | None:
        """The run's SLOs ({"ttft_ms", "tpot_ms"}) from its config, if recorded."""
        slo = (self.meta.get("config") or {}).get("slo")
        return slo if slo and "ttft_ms" in slo and "tpot_ms" in slo else None

    @property
    def warmup_s(self) -> float:
        return float((self.meta.get("window") or {}).get("warmup_s") or 0.0)

    @property
    def window_s(self) -> float | None:
        """Length of the measurement window in seconds (warm-up excluded), when the run
        recorded one."""
        window = self.meta.get("window") or {}
        start, end = window.get("start_unix_s"), window.get("end_unix_s")
        if start is None or end is None or end <= start + self.warmup_s:
            return None
        return float(end - start - self.warmup_s)

    @property
    def measured(self) -> pd.DataFrame:
        """The requests that started after the warm-up (`results.warmup_s`): what
        throughput and percentiles are computed from."""
        start = (self.meta.get("window") or {}).get("start_unix_s")
        if not self.warmup_s or start is None:
            return self.requests
        return self.requests[self.requests["start_unix_s"] >= start + self.warmup_s]


# Numeric columns left empty when not measured or not reported: read as NaN.
_OPTIONAL_NUMBERS = [
    column
    for column in CSV_COLUMNS
    if (column.endswith("_ms") and column != "itl_ms") or column in _NULLABLE_COUNTS
]


def read_requests(path: Path) -> pd.DataFrame:
    """requests.csv as a DataFrame, with `itl_ms` kept as text (see `itl_values`)."""
    try:
        frame = pd.read_csv(
            path,
            dtype=_DTYPES,
            keep_default_na=False,
            na_values={column: [""] for column in _OPTIONAL_NUMBERS},
        )
    except FileNotFoundError:
        raise KvswarmError(f"{path}: no such file (is this a kvswarm results directory?)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise KvswarmError(f"{path}: not a kvswarm requests.csv ({exc})") from None
    for flag in ("ok", "expected_hit", "streamed"):
        frame[flag] = frame[flag].astype(bool)
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
    meta_path = path / RUN_JSON
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KvswarmError(f"{meta_path}: invalid JSON ({exc.msg})") from None
    return Run(path=path, meta=meta, requests=read_requests(path / REQUESTS_CSV))
