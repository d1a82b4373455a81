"""Synthetic run directories with known distributions, for tests and benchmarks.

`write_synthetic_run` writes requests.csv (every column of the spec) and run.json for one
mode: per scenario, lognormal TTFT around a median for hits and another for misses,
lognormal TPOT, inter-token gaps, and a request rate, all from a seed. Vectorised, so a
million rows take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kvswarm.records import CSV_COLUMNS
from kvswarm.runrecord import RunRecord, Window, write_run_record

__all__ = ["SyntheticScenario", "write_synthetic_run"]

START_UNIX_S = 1_700_000_000.0


@dataclass(frozen=True)
class SyntheticScenario:
    """One scenario: `requests` spread evenly over the window, `hit_share` of them hits;
    medians in ms with a lognormal `sigma`; `itl_gaps` gaps per request (0: none
    written); `cached_reported`: whether cached_tokens is filled in."""

    name: str
    requests: int
    hit_share: float
    ttft_hit_ms: float
    ttft_miss_ms: float
    tpot_ms: float = 10.0
    sigma: float = 0.25
    output_tokens: int = 32
    prompt_tokens: int = 1000
    itl_gaps: int = 0
    cached_reported: bool = True
    failure_share: float = 0.0
    pd_split: bool = False


def _scenario_frame(
    s: SyntheticScenario, mode: str, window_s: float, rng: np.random.Generator
) -> pd.DataFrame:
    n = s.requests
    hit = rng.random(n) < s.hit_share
    ttft = np.where(hit, s.ttft_hit_ms, s.ttft_miss_ms) * rng.lognormal(0.0, s.sigma, n)
    tpot = s.tpot_ms * rng.lognormal(0.0, s.sigma / 4, n)
    e2e = ttft + tpot * (s.output_tokens - 1)
    ok = rng.random(n) >= s.failure_share
    start = START_UNIX_S + np.sort(rng.random(n)) * (window_s - e2e.max() / 1000.0)
    cached = np.where(hit, s.prompt_tokens // 2, 0)
    empty = np.full(n, "", dtype=object)
    frame = pd.DataFrame({
        "request_id": [f"w-0-{i}" for i in range(n)] if n < 100_000
        else pd.Series(np.arange(n)).astype(str).radd("w-0-"),
        "worker_id": "local", "user_id": 0, "scenario": s.name, "mode": mode,
        "endpoint": "chat", "streamed": 1, "start_unix_s": np.round(start, 6),
        "prefix_id": np.where(hit, "p-0", ""), "prefix_tokens": np.where(hit, 500, 0),
        "expected_hit": hit.astype(int),
        "prompt_tokens": s.prompt_tokens,
        "cached_tokens": cached if s.cached_reported else empty,
        "created_cache_tokens": s.prompt_tokens - cached if s.cached_reported else empty,
        "output_tokens": np.where(ok, s.output_tokens, 0), "output_tokens_source": "usage",
        "text_chunks": np.where(ok, s.output_tokens, 0),
        "ttft_ms": np.where(ok, np.round(ttft, 3), np.nan),
        "tpot_ms": np.where(ok, np.round(tpot, 3), np.nan),
        "e2e_ms": np.round(e2e, 3),
        "itl_mean_ms": np.where(ok, np.round(tpot, 3), np.nan),
        "itl_p50_ms": np.nan, "itl_p99_ms": np.nan, "itl_max_ms": np.nan,
        "itl_ms": _itl_cells(tpot, s.itl_gaps, ok) if s.itl_gaps else empty,
        "status_code": 200, "finish_reason": np.where(ok, "length", ""),
        "ok": ok.astype(int), "failure": np.where(ok, "", "http_503"),
        "error": np.where(ok, "", "503 Service Unavailable"),
        "server_queue_ms": np.nan,
        "server_prefill_ms": np.round(ttft * 0.7, 3) if s.pd_split else np.nan,
        "server_transfer_ms": np.round(ttft * 0.1, 3) if s.pd_split else np.nan,
        "server_decode_ms": np.round(tpot * (s.output_tokens - 1), 3) if s.pd_split else np.nan,
    })  # fmt: skip
    return frame


def _itl_cells(tpot: np.ndarray, gaps: int, ok: np.ndarray) -> np.ndarray:
    """Each request's gaps: its TPOT times a fixed jitter pattern, as `;`-joined text.
    Built column by column (gaps of all requests at once), not row by row."""
    pattern = 1.0 + 0.1 * np.sin(np.arange(gaps))
    text = pd.Series(np.round(tpot * pattern[0], 3)).astype(str)
    for factor in pattern[1:]:
        text = text + ";" + pd.Series(np.round(tpot * factor, 3)).astype(str)
    return np.where(ok, text.to_numpy(dtype=object), "")


def write_synthetic_run(
    directory: Path,
    scenarios: list[SyntheticScenario],
    mode: str = "non_disaggregated",
    window_s: float = 60.0,
    seed: int = 0,
    config: dict | None = None,
) -> Path:
    """Write requests.csv and run.json under `directory` (created); returns it."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    frames = [_scenario_frame(s, mode, window_s, rng) for s in scenarios]
    frame = pd.concat(frames, ignore_index=True)
    # Columns a synthetic run has no value for (open loop, trace replay): empty, as in a
    # real run that does not use them.
    frame = frame.reindex(columns=list(CSV_COLUMNS), fill_value="")
    frame.to_csv(directory / "requests.csv", index=False, float_format="%.6f")
    record = RunRecord(
        run_id=directory.name,
        status="finished",
        mode=mode,
        engine="sim",
        model="synthetic",
        window=Window(START_UNIX_S, START_UNIX_S + window_s),
        config=config or {},
    )
    write_run_record(directory, record)
    return directory
