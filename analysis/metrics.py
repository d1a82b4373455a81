"""The metrics every report uses, as named functions over request rows.

Definitions follow DESIGN.md (`vllm bench serve`): percentiles are exact over successful
requests; throughput is over the measurement window (warm-up excluded); goodput counts
successful requests within the run's TTFT/TPOT SLOs; a request's completion time is
`start_unix_s + e2e_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "LATENCY_COLUMNS",
    "REPORT_PERCENTILES",
    "HitSplit",
    "Throughput",
    "completion_unix_s",
    "failures_by_category",
    "goodput_per_s",
    "hit_split",
    "median",
    "percentiles",
    "successful",
    "throughput",
    "time_series",
    "window_rates",
]

REPORT_PERCENTILES = (50, 90, 95, 99, 100)  # 100 = max
# requests.csv's per-request latency columns by metric (ITL comes from the gaps).
LATENCY_COLUMNS = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2e": "e2e_ms"}
PD_COLUMNS = {
    "prefill": "server_prefill_ms",
    "transfer": "server_transfer_ms",
    "decode": "server_decode_ms",
}


def successful(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["ok"]]


def percentiles(
    values: pd.Series | np.ndarray, points: tuple[int, ...] = REPORT_PERCENTILES
) -> dict[int, float | None]:
    """Exact percentiles (numpy's linear interpolation) of the non-missing values."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    if not len(array):
        return {p: None for p in points}
    return {p: float(v) for p, v in zip(points, np.percentile(array, points), strict=True)}


def median(values: pd.Series | np.ndarray) -> float | None:
    return percentiles(values, (50,))[50]


@dataclass(frozen=True)
class HitSplit:
    """Successful requests split into cache hits and misses, and on what basis:
    `"cached tokens"` (the server reported cached prompt tokens for every request; a hit
    has more than zero) or `"design"` (the workload's designed hits)."""

    hits: pd.DataFrame
    misses: pd.DataFrame
    basis: str


def hit_split(rows: pd.DataFrame) -> HitSplit:
    """Hits and misses among the successful rows: by cached tokens where the server
    reported them for every request, else by design."""
    ok = successful(rows)
    if len(ok) and ok["cached_tokens"].notna().all():
        hit = (ok["cached_tokens"] > 0).to_numpy(dtype=bool)
        return HitSplit(ok[hit], ok[~hit], "cached tokens")
    designed = ok["expected_hit"].to_numpy(dtype=bool)
    return HitSplit(ok[designed], ok[~designed], "design")


@dataclass(frozen=True)
class Throughput:
    """Over a window: successful requests/s, output tokens/s and total (prompt + output)
    tokens/s; None without a window."""

    requests_per_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None


def throughput(rows: pd.DataFrame, window_s: float | None) -> Throughput:
    if not window_s:
        return Throughput(None, None, None)
    ok = successful(rows)
    output = float(ok["output_tokens"].sum())
    prompt = float(ok["prompt_tokens"].sum())
    return Throughput(len(ok) / window_s, output / window_s, (output + prompt) / window_s)


def goodput_per_s(
    rows: pd.DataFrame, window_s: float | None, slo: dict[str, float] | None
) -> float | None:
    """Successful requests/s whose TTFT, TPOT where defined, and E2E when the SLOs set
    one, meet the SLOs (the requests `met_slo` flags)."""
    if not window_s or not slo:
        return None
    ok = successful(rows)
    meets = (ok["ttft_ms"] <= slo["ttft_ms"]) & (
        ok["tpot_ms"].isna() | (ok["tpot_ms"] <= slo["tpot_ms"])
    )
    if slo.get("e2e_ms"):
        meets &= ok["e2e_ms"] <= slo["e2e_ms"]
    return int(meets.sum()) / window_s


def failures_by_category(rows: pd.DataFrame) -> dict[str, int]:
    """Failed requests per category (cancelled requests are not failures)."""
    failure = rows["failure"].astype("string")
    failed = failure[~rows["ok"].to_numpy(dtype=bool) & (failure != "cancelled")]
    return {str(k): int(v) for k, v in failed.value_counts().sort_index().items()}


def completion_unix_s(rows: pd.DataFrame) -> pd.Series:
    """When each request ended (wall clock): its start plus its E2E (start if unknown)."""
    return rows["start_unix_s"] + rows["e2e_ms"].fillna(0.0) / 1000.0


def window_rates(
    rows: pd.DataFrame, start_unix_s: float, end_unix_s: float, width_s: float
) -> pd.DataFrame:
    """Per window of `width_s` seconds (only whole windows): successful requests/s and
    output tokens/s by completion time. The resampling unit of throughput comparisons."""
    count = int(np.floor((end_unix_s - start_unix_s) / width_s + 1e-9))
    if count < 1:
        return pd.DataFrame({"requests_per_s": [], "output_tokens_per_s": []}, dtype=float)
    ok = successful(rows)
    slot = ((completion_unix_s(ok) - start_unix_s) // width_s).to_numpy()
    inside = (slot >= 0) & (slot < count)
    slots = slot[inside].astype(np.int64)
    requests = np.bincount(slots, minlength=count)
    tokens = np.bincount(
        slots, weights=ok["output_tokens"].to_numpy(dtype=float)[inside], minlength=count
    )
    return pd.DataFrame({"requests_per_s": requests / width_s,
                         "output_tokens_per_s": tokens / width_s})  # fmt: skip


def time_series(rows: pd.DataFrame, start_unix_s: float, width_s: float) -> pd.DataFrame:
    """Per `width_s` bin from `start_unix_s` (by request start): `t_s` (bin start,
    seconds into the run), requests/s and output tokens/s completed in the bin, TTFT
    p50/p90/p99 of requests started in it, and failures started in it."""
    if rows.empty:
        return pd.DataFrame()
    bins = ((rows["start_unix_s"] - start_unix_s) // width_s).astype("int64")
    ok_mask = rows["ok"].to_numpy(dtype=bool)
    ok = rows[ok_mask]
    done = ((completion_unix_s(ok) - start_unix_s) // width_s).astype("int64")
    grouped = ok.groupby(bins[ok_mask])["ttft_ms"]
    frame = pd.DataFrame(
        {
            "ttft_p50_ms": grouped.quantile(0.5),
            "ttft_p90_ms": grouped.quantile(0.9),
            "ttft_p99_ms": grouped.quantile(0.99),
        }
    )
    index = pd.RangeIndex(0, int(max(bins.max(), done.max() if len(done) else 0)) + 1)
    frame = frame.reindex(index)
    frame["requests_per_s"] = done.value_counts().reindex(index, fill_value=0) / width_s
    frame["output_tokens_per_s"] = (
        ok["output_tokens"].astype(float).groupby(done).sum().reindex(index, fill_value=0.0)
        / width_s
    )
    failed = rows["failure"].astype("string")
    failed_mask = ~ok_mask & (failed != "cancelled").to_numpy(dtype=bool)
    frame["failures"] = bins[failed_mask].value_counts().reindex(index, fill_value=0)
    frame["t_s"] = index * width_s
    return frame
