"""Bootstrap confidence intervals for the comparisons: medians of two groups of requests,
means of two groups of per-window throughputs.

Each function returns the point estimate and a percentile-bootstrap interval of both the
difference (`b - a`, in the data's unit) and the relative change (`b / a - 1`), from the
same resamples. Resampling is vectorised (one `(resamples, n)` index draw per chunk); for
large groups the resample median is drawn through its rank (a resample's median is the
order statistic at a rank that is asymptotically normal around n/2 with standard deviation
sqrt(n)/2), which costs O(resamples) instead of O(resamples x n).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "compare_means", "compare_medians"]

RESAMPLES = 2000
LEVEL = 0.95
# Above this group size, the median is resampled through its rank.
EXACT_LIMIT = 20_000
_CELLS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class Comparison:
    """Group b against group a: `a`, `b` their statistics, `difference` = b - a and
    `relative` = b / a - 1 with their (low, high) intervals at `level`."""

    statistic: str
    n_a: int
    n_b: int
    a: float
    b: float
    difference: float
    difference_ci: tuple[float, float]
    relative: float
    relative_ci: tuple[float, float]
    level: float
    resamples: int


def _clean(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[~np.isnan(array)]


def _resampled(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray],
    resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The statistic of `resamples` resamples with replacement, chunked to bound memory."""
    n = len(values)
    per_chunk = max(1, _CELLS_PER_CHUNK // n)
    out = np.empty(resamples)
    for start in range(0, resamples, per_chunk):
        size = min(per_chunk, resamples - start)
        picks = values[rng.integers(0, n, size=(size, n))]
        out[start : start + size] = statistic(picks, axis=1)
    return out


def _resampled_medians(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    if n <= EXACT_LIMIT:
        return _resampled(values, np.median, resamples, rng)
    ordered = np.sort(values)
    ranks = rng.normal((n - 1) / 2.0, np.sqrt(n) / 2.0, size=resamples)
    return ordered[np.clip(np.rint(ranks), 0, n - 1).astype(np.int64)]


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _compare(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    point: Callable[[np.ndarray], float],
    draws: Callable[[np.ndarray], np.ndarray],
    level: float,
    resamples: int,
) -> Comparison:
    stat_a, stat_b = point(a), point(b)
    boot_a, boot_b = draws(a), draws(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = boot_b / boot_a - 1.0
        estimate = stat_b / stat_a - 1.0 if stat_a else float("nan")
    return Comparison(
        statistic=name,
        n_a=len(a),
        n_b=len(b),
        a=stat_a,
        b=stat_b,
        difference=stat_b - stat_a,
        difference_ci=_interval(boot_b - boot_a, level),
        relative=float(estimate),
        relative_ci=_interval(relative[np.isfinite(relative)], level)
        if np.isfinite(relative).any()
        else (float("nan"), float("nan")),
        level=level,
        resamples=resamples,
    )


def compare_medians(
    a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL,
    seed: int = 0,
) -> Comparison | None:  # fmt: skip
    """Median of b against median of a; None when either group is empty."""
    a, b = _clean(a), _clean(b)
    if not len(a) or not len(b):
        return None
    rng = np.random.default_rng(seed)
    return _compare(
        "median", a, b, lambda x: float(np.median(x)),
        lambda x: _resampled_medians(x, resamples, rng), level, resamples,
    )  # fmt: skip


def compare_means(
    a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL,
    seed: int = 0,
) -> Comparison | None:  # fmt: skip
    """Mean of b against mean of a (per-window throughputs: each window one value);
    None when either group is empty."""
    a, b = _clean(a), _clean(b)
    if not len(a) or not len(b):
        return None
    rng = np.random.default_rng(seed)
    return _compare(
        "mean", a, b, lambda x: float(np.mean(x)),
        lambda x: _resampled(x, np.mean, resamples, rng), level, resamples,
    )  # fmt: skip
