"""Report charts as PNG files (matplotlib, Agg backend): each function draws one figure
with a title, axis labels with units and a legend, saves it and returns its `Chart`, or
None when there is nothing to draw. Large runs are drawn from quantiles or a seeded
sample, never point by point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kvswarm.analysis.document import Chart  # noqa: E402

__all__ = [
    "bar_chart",
    "cdf_chart",
    "failures_chart",
    "interval_chart",
    "pd_phase_chart",
    "scatter_chart",
    "series_chart",
]

CDF_POINTS = 400
SCATTER_POINTS = 5000


def _save(figure: plt.Figure, out_dir: Path, relative: str, title: str) -> Chart:
    path = out_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Chart(title, relative)


def cdf_chart(
    groups: Mapping[str, np.ndarray], title: str, xlabel: str, out_dir: Path, relative: str
) -> Chart | None:
    """One empirical CDF per group (drawn from CDF_POINTS quantiles)."""
    groups = {k: np.asarray(v, dtype=float) for k, v in groups.items()}
    groups = {k: v[~np.isnan(v)] for k, v in groups.items()}
    groups = {k: v for k, v in groups.items() if len(v)}
    if not groups:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5))
    levels = np.linspace(0.0, 1.0, CDF_POINTS)
    for label, values in groups.items():
        axes.plot(np.quantile(values, levels), levels, label=f"{label} (n={len(values)})")
    axes.set(title=title, xlabel=xlabel, ylabel="share of requests")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, out_dir, relative, title)


def series_chart(
    series: Mapping[str, pd.DataFrame],
    columns: Mapping[str, str],
    title: str,
    ylabel: str,
    out_dir: Path,
    relative: str,
) -> Chart | None:
    """Lines over time: for each frame (by label) each column (by its legend word),
    against the frame's `t_s`."""
    series = {k: v for k, v in series.items() if not v.empty}
    if not series:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, frame in series.items():
        for column, word in columns.items():
            axes.plot(frame["t_s"], frame[column], marker=".", label=f"{label} {word}".strip())
    axes.set(title=title, xlabel="time since the run started (s)", ylabel=ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, out_dir, relative, title)


def failures_chart(series: Mapping[str, pd.DataFrame], out_dir: Path, relative: str) -> Chart:
    """Failures per time bin, one line per scenario (flat at zero when none failed)."""
    title = "Failures over time"
    figure, axes = plt.subplots(figsize=(8, 3.5))
    for label, frame in series.items():
        if not frame.empty:
            axes.step(frame["t_s"], frame["failures"], where="post", label=label)
    axes.set(title=title, xlabel="time since the run started (s)", ylabel="failed requests per bin")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    return _save(figure, out_dir, relative, title)


def scatter_chart(
    groups: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    xlabel: str,
    ylabel: str,
    out_dir: Path,
    relative: str,
) -> Chart | None:
    """Points per group, a seeded sample of at most SCATTER_POINTS per group."""
    rng = np.random.default_rng(0)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for label, (x, y) in groups.items():
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if len(x) > SCATTER_POINTS:
            pick = rng.choice(len(x), SCATTER_POINTS, replace=False)
            x, y = x[pick], y[pick]
        if len(x):
            axes.scatter(x, y, s=6, alpha=0.5, label=label)
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", markerscale=3)
    return _save(figure, out_dir, relative, title)


def bar_chart(
    values: Mapping[str, Mapping[str, float | None]],
    title: str,
    ylabel: str,
    out_dir: Path,
    relative: str,
    stacked: bool = False,
) -> Chart | None:
    """Grouped (or stacked) bars: `values[category][series]`."""
    categories = list(values)
    names = list(dict.fromkeys(name for inner in values.values() for name in inner))
    if not categories or not names:
        return None
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(categories) + 3), 4.5))
    x = np.arange(len(categories))
    width = 0.8 if stacked else 0.8 / len(names)
    bottom = np.zeros(len(categories))
    for i, name in enumerate(names):
        heights = np.array([values[c].get(name) or 0.0 for c in categories], dtype=float)
        offset = x if stacked else x - 0.4 + width * (i + 0.5)
        axes.bar(offset, heights, width, bottom=bottom if stacked else None, label=name)
        if stacked:
            bottom += heights
    axes.set_xticks(x, categories, rotation=20, ha="right", fontsize="small")
    axes.set(title=title, ylabel=ylabel)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize="small")
    return _save(figure, out_dir, relative, title)


def interval_chart(
    rows: Sequence[tuple[str, float, float, float, float | None, float | None]],
    title: str,
    xlabel: str,
    out_dir: Path,
    relative: str,
) -> Chart | None:
    """Estimates with their intervals against target bands: rows of
    (label, estimate, low, high, target low, target high), shares drawn as %."""
    rows = [r for r in rows if np.isfinite(r[1])]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.8))
    for y, (_, estimate, low, high, t_low, t_high) in enumerate(rows):
        band_low = -1e9 if t_low is None else t_low * 100
        band_high = 1e9 if t_high is None else t_high * 100
        axes.fill_betweenx([y - 0.35, y + 0.35], band_low, band_high, color="tab:green",
                           alpha=0.15, label="target" if y == 0 else None)  # fmt: skip
        axes.errorbar(estimate * 100, y, xerr=[[max(0.0, (estimate - low) * 100)],
                      [max(0.0, (high - estimate) * 100)]], fmt="o", color="tab:blue",
                      capsize=4, label="estimate, 95% CI" if y == 0 else None)  # fmt: skip
    finite = [v * 100 for r in rows for v in r[1:] if v is not None and np.isfinite(v)]
    span = max(finite) - min(finite) or 1.0
    axes.set_xlim(min(finite) - 0.1 * span, max(finite) + 0.1 * span)
    axes.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize="small")
    axes.set(title=title, xlabel=xlabel)
    axes.grid(alpha=0.3, axis="x")
    axes.legend(fontsize="small")
    return _save(figure, out_dir, relative, title)


def pd_phase_chart(
    medians: Mapping[str, Mapping[str, float | None]], out_dir: Path, relative: str
) -> Chart | None:
    """Median server-side prefill, KV transfer and decode per scenario, stacked."""
    return bar_chart(
        medians,
        "PD phase breakdown (median per request, server-reported)",
        "time (ms)",
        out_dir,
        relative,
        stacked=True,
    )
