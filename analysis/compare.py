"""Comparing runs (`kvswarm compare`): side-by-side tables and charts, and the two analyses
with verdicts against targets (`kvswarm.analysis.targets`):

- cache effect, per mode and reuse scenario: median TTFT of hits against misses (split as
  in `metrics.hit_split`), or of the scenario's hits against the cold-start scenario of the
  same mode when a run has too few misses;
- deployment modes, per scenario run in both: PD (b) against non-PD (a), or every other
  mode against the `--baseline` run's: TPOT difference, throughput gain (mean of
  per-window requests/s and output tokens/s), TTFT and E2E differences.

Each verdict carries its estimate and a 95% bootstrap interval (`kvswarm.analysis.bootstrap`)
and is PASS, FAIL or INCONCLUSIVE (interval straddles the target, or a group is smaller than
`min_requests` requests / `min_windows` windows); differences without a target are
reported with no verdict ("-").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvswarm.analysis import charts
from kvswarm.analysis.bootstrap import Comparison, compare_means, compare_medians
from kvswarm.analysis.document import Chart, Document, Section, Table, cell, share_cell
from kvswarm.analysis.metrics import hit_split, median, percentiles, successful, window_rates
from kvswarm.analysis.runs import Run
from kvswarm.analysis.targets import INCONCLUSIVE, Target, Targets, judge, targets_from

__all__ = ["COLD_START", "Group", "Verdict", "build_comparison", "groups_of", "verdicts_of"]

COLD_START = "cold_start"
PD, NON_PD = "pd_disaggregated", "non_disaggregated"
CHARTS_DIR = "comparison_charts"
NO_TARGET = "-"


@dataclass
class Group:
    """Every request of one scenario in one mode, over the runs given, and the per-window
    throughputs of those runs."""

    mode: str
    scenario: str
    runs: list[Run] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)
    windows: list[pd.DataFrame] = field(default_factory=list)
    locust_medians: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> pd.DataFrame:
        return pd.concat(self.frames) if self.frames else pd.DataFrame()

    @property
    def window_frame(self) -> pd.DataFrame:
        return pd.concat(self.windows, ignore_index=True) if self.windows else pd.DataFrame()

    @property
    def per_request(self) -> bool:
        return bool(self.frames) and not self.rows.empty

    def values(self, column: str) -> np.ndarray:
        rows = self.rows
        return successful(rows)[column].to_numpy(dtype=float) if len(rows) else np.empty(0)


def _run_windows(run: Run, scenario: str, rows: pd.DataFrame, count: int) -> pd.DataFrame:
    window = run.window_s
    if not window:
        return pd.DataFrame()
    start = run.record.window.measure_start_unix_s
    return window_rates(rows, start, start + window, window / count)


def _locust_windows(run: Run, scenario: str) -> pd.DataFrame:
    """Per history interval: the run's LLM requests/s (Locust's Aggregated row counts every
    event type; scaled by this scenario's share of them) and output tokens/s."""
    assert run.locust is not None
    history, stats = run.locust.history, run.locust.stats
    if history is None:
        return pd.DataFrame()
    agg = history[history["Name"] == "Aggregated"].sort_values("Timestamp")
    seconds = agg["Timestamp"].diff().to_numpy()[1:]
    counts = agg["Total Request Count"].diff().to_numpy()[1:]
    total = float(stats.loc[stats["Name"] == "Aggregated", "Request Count"].sum())
    llm = run.locust.rows("LLM")
    mine = llm[llm["Name"] == scenario]
    if not total or mine.empty or not len(seconds):
        return pd.DataFrame()
    share = float(mine["Request Count"].iloc[0]) / total
    keep = seconds > 0
    rates = counts[keep] / seconds[keep] * share
    return pd.DataFrame(
        {
            "requests_per_s": rates,
            "output_tokens_per_s": rates * float(mine["Average Content Size"].iloc[0]),
        }
    )


def groups_of(runs: list[Run], targets: Targets) -> dict[tuple[str, str], Group]:
    """Groups by (mode, scenario), in the order runs and scenarios come."""
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        mode = run.record.mode
        if run.has_requests:
            measured = run.measured
            for name in sorted(str(n) for n in measured["scenario"].dropna().unique()):
                group = groups.setdefault((mode, name), Group(mode, name))
                rows = measured[measured["scenario"] == name]
                group.runs.append(run)
                group.frames.append(rows)
                group.windows.append(_run_windows(run, name, rows, targets.throughput_windows))
            continue
        assert run.locust is not None
        for kind, metric in (("TTFT", "ttft"), ("TPOT", "tpot"), ("LLM", "e2e")):
            for _, row in run.locust.rows(kind).iterrows():
                group = groups.setdefault((mode, str(row["Name"])), Group(mode, str(row["Name"])))
                group.locust_medians[metric] = float(row["50%"])
                if kind == "LLM":
                    group.runs.append(run)
                    group.windows.append(_locust_windows(run, str(row["Name"])))
    return groups


@dataclass(frozen=True)
class Verdict:
    """One analysis of one scenario: `a` the reference group, `b` the one judged;
    `estimate` and `ci` are relative (0.65 = 65%); `outcome` PASS, FAIL, INCONCLUSIVE or
    "-" (no target)."""

    analysis: str
    scenario: str
    measure: str
    a: str
    b: str
    estimate: float | None
    ci: tuple[float, float] | None
    target: Target | None
    outcome: str
    reason: str
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else {
            "low": self.target.low, "high": self.target.high, "better": self.target.better,
            "text": self.target.describe()}  # fmt: skip
        data["ci"] = None if self.ci is None else list(self.ci)
        return data


def _verdict(
    analysis: str, scenario: str, measure: str, a: str, b: str, comparison: Comparison | None,
    target: Target | None, minimum: int, negate: bool = False, estimate_only: float | None = None,
) -> Verdict:  # fmt: skip
    """Judge a comparison's relative change (negated for a reduction)."""
    if comparison is None:
        why = ("no per-request values (Locust csv): estimate only" if estimate_only is not None
               else "a group is empty")  # fmt: skip
        return Verdict(analysis, scenario, measure, a, b, estimate_only, None, target,
                       INCONCLUSIVE if target else NO_TARGET, why)  # fmt: skip
    sign = -1.0 if negate else 1.0
    estimate = sign * comparison.relative
    low, high = sorted(sign * v for v in comparison.relative_ci)
    small = min(comparison.n_a, comparison.n_b) < minimum
    if target is None:
        outcome, why = NO_TARGET, "no target"
        if small:
            why = f"no target; a group is small (n={comparison.n_a} vs {comparison.n_b})"
    elif small:
        outcome = INCONCLUSIVE
        why = f"a group is too small (n={comparison.n_a} vs {comparison.n_b}, need {minimum})"
    else:
        outcome, why = judge(target, (low, high))
    return Verdict(analysis, scenario, measure, a, b, estimate, (low, high), target, outcome,
                   why, comparison)  # fmt: skip


def _is_cold(group: Group) -> bool:
    if group.scenario == COLD_START:
        return True
    return any(getattr(run.record.workloads.get(group.scenario), "type", "") == COLD_START
               for run in group.runs)  # fmt: skip


def cache_verdicts(groups: dict[tuple[str, str], Group], targets: Targets) -> list[Verdict]:
    out = []
    for (mode, name), group in groups.items():
        if _is_cold(group) or not group.per_request:
            continue
        split = hit_split(group.rows)
        cold = next((g for (m, _), g in groups.items() if m == mode and _is_cold(g)
                     and g.per_request), None)  # fmt: skip
        hits = split.hits["ttft_ms"].to_numpy(dtype=float)
        if len(split.misses) >= targets.min_requests or cold is None:
            reference, a = (
                split.misses["ttft_ms"].to_numpy(dtype=float),
                f"misses (by {split.basis})",
            )
        else:
            reference, a = cold.values("ttft_ms"), f"{cold.scenario} (all)"
        b = f"hits (by {split.basis})"
        comparison = compare_medians(reference, hits)
        out.append(_verdict("cache effect", f"{name} [{mode}]", "TTFT cut (median)", a, b,
                            comparison, targets.cache_ttft_reduction, targets.min_requests,
                            negate=True))  # fmt: skip
    return out


def _baseline_mode(groups: dict[tuple[str, str], Group], baseline: Run | None) -> str | None:
    modes = list(dict.fromkeys(mode for mode, _ in groups))
    if baseline is not None:
        return baseline.record.mode
    if NON_PD in modes and len(modes) > 1:
        return NON_PD
    return modes[0] if len(modes) > 1 else None


def _locust_relative(a: Group, b: Group, metric: str) -> float | None:
    va, vb = a.locust_medians.get(metric), b.locust_medians.get(metric)
    if va is None or vb is None:
        va = va if va is not None else median(a.values(f"{metric}_ms"))
        vb = vb if vb is not None else median(b.values(f"{metric}_ms"))
    return vb / va - 1.0 if va and vb is not None else None


def mode_verdicts(
    groups: dict[tuple[str, str], Group], targets: Targets, baseline: Run | None
) -> list[Verdict]:
    base = _baseline_mode(groups, baseline)
    if base is None:
        return []
    out = []
    for (mode, name), b in groups.items():
        a = groups.get((base, name))
        if mode == base or a is None:
            continue
        label = f"{name} [{mode} vs {base}]"
        for metric, column, target in (
            ("TPOT", "tpot_ms", targets.pd_tpot_difference),
            ("TTFT", "ttft_ms", None),
            ("E2E", "e2e_ms", None),
        ):
            key = metric.lower()
            both = a.per_request and b.per_request
            comparison = compare_medians(a.values(column), b.values(column)) if both else None
            estimate = None if both else _locust_relative(a, b, key)
            out.append(_verdict("deployment modes", label, f"{metric} difference (median)",
                                base, mode, comparison, target, targets.min_requests,
                                estimate_only=estimate))  # fmt: skip
        wa, wb = a.window_frame, b.window_frame
        for column, words in (("requests_per_s", "requests/s"),
                              ("output_tokens_per_s", "output tokens/s")):  # fmt: skip
            comparison = (compare_means(wa[column].to_numpy(), wb[column].to_numpy())
                          if len(wa) and len(wb) else None)  # fmt: skip
            out.append(_verdict("deployment modes", label, f"throughput gain ({words}, mean "
                                "of windows)", base, mode, comparison,
                                targets.pd_throughput_gain, targets.min_windows))  # fmt: skip
    return out


def verdicts_of(runs: list[Run], baseline: Run | None = None,
                targets: Targets | None = None) -> list[Verdict]:  # fmt: skip
    targets = targets or targets_for(runs)
    groups = groups_of(runs, targets)
    return cache_verdicts(groups, targets) + mode_verdicts(groups, targets, baseline)


def targets_for(runs: list[Run]) -> Targets:
    """The first run's config `targets:` mapping, else the defaults."""
    for run in runs:
        if run.record.config.get("targets"):
            return targets_from(run.record.config, f"{run.path}/run.json: config")
    return Targets()


def side_by_side(groups: dict[tuple[str, str], Group]) -> list[dict[str, Any]]:
    """Per group: counts, throughput (mean of windows) and latency percentiles."""
    out = []
    for (mode, name), group in groups.items():
        windows = group.window_frame
        rows = group.rows
        ok = successful(rows) if len(rows) else rows
        locust = group.locust_medians
        out.append({
            "mode": mode,
            "scenario": name,
            "runs": [run.name for run in group.runs],
            "requests": int(len(rows)) if len(rows) else None,
            "ok": int(len(ok)) if len(rows) else None,
            "requests_per_s": float(windows["requests_per_s"].mean()) if len(windows) else None,
            "output_tokens_per_s": float(windows["output_tokens_per_s"].mean())
            if len(windows) else None,
            "ttft_ms": percentiles(group.values("ttft_ms"), (50, 90, 99)) if group.per_request
            else {50: locust.get("ttft"), 90: None, 99: None},
            "tpot_ms_p50": median(group.values("tpot_ms")) if group.per_request
            else locust.get("tpot"),
            "e2e_ms_p50": median(group.values("e2e_ms")) if group.per_request
            else locust.get("e2e"),
            "hit_share": float(len(hit_split(rows).hits)) / len(ok) if len(rows) and len(ok)
            else None,
        })  # fmt: skip
    return out


def _side_table(rows: list[dict[str, Any]]) -> Table:
    return Table(
        "",
        ("mode", "scenario", "requests", "ok", "req/s", "output tok/s", "TTFT p50 (ms)",
         "TTFT p90 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)", "E2E p50 (ms)", "hits"),
        tuple(
            (r["mode"], r["scenario"], cell(r["requests"]), cell(r["ok"]),
             cell(r["requests_per_s"], 3), cell(r["output_tokens_per_s"], 1),
             cell(r["ttft_ms"][50]), cell(r["ttft_ms"][90]), cell(r["ttft_ms"][99]),
             cell(r["tpot_ms_p50"]), cell(r["e2e_ms_p50"]), share_cell(r["hit_share"]))
            for r in rows
        ),
        "req/s and output tok/s: mean over equal windows of each run's measurement window.",
    )  # fmt: skip


def _ci_cell(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{share_cell(ci[0])}, {share_cell(ci[1])}]"


def _stat_cell(v: Verdict, side: str) -> str:
    if v.comparison is None:
        return "-"
    return f"{cell(getattr(v.comparison, side), 3)} (n={getattr(v.comparison, 'n_' + side)})"


def _verdict_table(verdicts: list[Verdict], analysis: str) -> Table:
    rows = tuple(
        (v.scenario, v.measure, f"{v.b} vs {v.a}", _stat_cell(v, "a"), _stat_cell(v, "b"),
         share_cell(v.estimate), _ci_cell(v.ci), v.target.describe() if v.target else "-",
         v.outcome, v.reason)
        for v in verdicts if v.analysis == analysis
    )  # fmt: skip
    return Table(
        "",
        ("scenario", "measure", "groups", "a", "b", "estimate", "95% CI", "target", "verdict",
         "why"),
        rows,
        "a, b: the statistic of each group (medians in ms; means of per-window throughput) with "
        "its size. estimate: relative (TTFT cut = 1 - b/a; differences and gains = b/a - 1), "
        "with a percentile-bootstrap interval from 2000 resamples.",
    )  # fmt: skip


def _charts(groups: dict[tuple[str, str], Group], side: list[dict[str, Any]],
            verdicts: list[Verdict], out_dir: Path) -> list[Chart]:  # fmt: skip
    label = {(r["mode"], r["scenario"]): r for r in side}
    scenarios = list(dict.fromkeys(name for _, name in groups))
    modes = list(dict.fromkeys(mode for mode, _ in groups))
    made: list[Chart | None] = [
        charts.bar_chart({s: {m: label[(m, s)]["ttft_ms"][50] for m in modes if (m, s) in label}
                          for s in scenarios}, "TTFT p50 by scenario and mode", "TTFT p50 (ms)",
                         out_dir, f"{CHARTS_DIR}/ttft_p50.png"),
        charts.bar_chart({s: {m: label[(m, s)]["tpot_ms_p50"] for m in modes if (m, s) in label}
                          for s in scenarios}, "TPOT p50 by scenario and mode", "TPOT p50 (ms)",
                         out_dir, f"{CHARTS_DIR}/tpot_p50.png"),
        charts.bar_chart({s: {m: label[(m, s)]["requests_per_s"] for m in modes
                              if (m, s) in label} for s in scenarios},
                         "Throughput by scenario and mode", "requests/s", out_dir,
                         f"{CHARTS_DIR}/throughput.png"),
        charts.cdf_chart({f"{s} [{m}]": g.values("ttft_ms") for (m, s), g in groups.items()},
                         "TTFT CDF by scenario and mode", "TTFT (ms)", out_dir,
                         f"{CHARTS_DIR}/ttft_cdf.png"),
    ]  # fmt: skip
    judged = [v for v in verdicts if v.ci is not None and v.estimate is not None]
    made.append(charts.interval_chart(
        [(f"{v.scenario}: {v.measure}"[:60], v.estimate, v.ci[0], v.ci[1],
          v.target.low if v.target else None, v.target.high if v.target else None)
         for v in judged if v.target is not None and math.isfinite(v.estimate)],
        "Verdicts: estimates with 95% CIs against targets", "relative change (%)", out_dir,
        f"{CHARTS_DIR}/verdicts.png"))  # fmt: skip
    return [c for c in made if c is not None]


def build_comparison(
    runs: list[Run], out_dir: Path, baseline: Run | None = None, targets: Targets | None = None,
    with_charts: bool = True,
) -> Document:  # fmt: skip
    """The comparison of the runs (the baseline among them or added); charts under
    `out_dir/comparison_charts/`."""
    if baseline is not None and all(r.path != baseline.path for r in runs):
        runs = [baseline, *runs]
    targets = targets or targets_for(runs)
    groups = groups_of(runs, targets)
    verdicts = cache_verdicts(groups, targets) + mode_verdicts(groups, targets, baseline)
    side = side_by_side(groups)
    base = _baseline_mode(groups, baseline)
    mode_text = (f"Every other mode against {base}." if base
                 else "Only one deployment mode among the runs: no mode comparison.")  # fmt: skip
    sections = [
        Section(
            "Runs",
            tables=(
                Table(
                    "",
                    ("run", "mode", "scenarios", "path"),
                    tuple(
                        (
                            r.name,
                            r.record.mode,
                            ", ".join(sorted({s for (m, s), g in groups.items() if r in g.runs})),
                            str(r.path),
                        )
                        for r in runs
                    ),
                ),
            ),
        ),  # fmt: skip
        Section("Side by side", tables=(_side_table(side),)),
        Section(
            "Cache effect",
            (
                "TTFT of cache hits against misses (or the cold-start "
                "scenario of the same mode), per mode and scenario.",
            ),
            (_verdict_table(verdicts, "cache effect"),),
        ),  # fmt: skip
        Section("Deployment modes", (mode_text,), (_verdict_table(verdicts, "deployment modes"),)),
        Section(
            "Targets",
            (
                f"Targets from {targets.source}; a verdict needs at least "
                f"{targets.min_requests} requests per group "
                f"({targets.min_windows} windows for throughput).",
            ),
        ),  # fmt: skip
    ]
    if with_charts:
        sections.append(Section("Charts", charts=tuple(_charts(groups, side, verdicts, out_dir))))
    data = {
        "runs": [{"name": r.name, "mode": r.record.mode, "path": str(r.path)} for r in runs],
        "baseline_mode": base,
        "side_by_side": side,
        "verdicts": [v.to_dict() for v in verdicts],
        "targets": {k: (asdict(v) if isinstance(v, Target) else v)
                    for k, v in asdict(targets).items()},
    }  # fmt: skip
    title = "kvswarm comparison: " + ", ".join(dict.fromkeys(r.record.mode for r in runs))
    intro = (
        f"{len(runs)} run(s). Latencies in ms; verdicts PASS / FAIL / INCONCLUSIVE "
        "against the targets below, with 95% bootstrap intervals.",
    )
    return Document("comparison", title, intro, tuple(sections), data)
