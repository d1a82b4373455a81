"""A `--kv-steps` sweep, step by step: each level's latencies and SLO attainment, and
the capacity at SLO (the highest level at which enough requests met the SLOs).

A step is within the SLOs when the share of its requests that met them (requests.csv's
`met_slo`: succeeded, TTFT, TPOT and, when set, E2E within the config's `slo`) is at
least `slo.attainment` (default 0.9). The capacity at SLO is the highest level of a
step within the SLOs, per scenario; the run's deployment mode is the run's own, so a
matrix of runs gives it per scenario and mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kvswarm.analysis.metrics import percentiles
from kvswarm.analysis.runs import Run

__all__ = ["StepFigures", "Sweep", "format_sweep", "sweep"]

DEFAULT_ATTAINMENT = 0.9


@dataclass(frozen=True)
class StepFigures:
    """One scenario at one step of the plan."""

    scenario: str
    step: int
    level: float
    requests: int
    ok: int
    met_slo_share: float | None
    requests_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    e2e_p99_ms: float | None


@dataclass(frozen=True)
class Sweep:
    """A stepped run: the plan, every step's figures, and the capacity per scenario."""

    unit: str
    step_s: float
    attainment: float
    steps: list[StepFigures]
    capacity: dict[str, float | None]


def sweep(run: Run) -> Sweep | None:
    """The run's sweep; None for a run without `--kv-steps` (or without its columns)."""
    plan = (run.record.options or {}).get("steps")
    rows = run.measured
    if not plan or "step" not in rows or "met_slo" not in rows:
        return None
    levels = [float(level) for level in plan["levels"]]
    attainment = float((run.record.config.get("slo") or {}).get("attainment", DEFAULT_ATTAINMENT))
    stepped = rows[rows["step"].notna()]
    figures = [
        _figures(str(scenario), int(step), levels, float(plan["step_s"]), group)
        for (scenario, step), group in stepped.groupby(["scenario", "step"], observed=True)
        if 0 <= int(step) < len(levels)
    ]
    capacity: dict[str, float | None] = {}
    for figure in figures:
        within = figure.met_slo_share is not None and figure.met_slo_share >= attainment
        best = capacity.get(figure.scenario)
        if within and (best is None or figure.level > best):
            capacity[figure.scenario] = figure.level
        else:
            capacity.setdefault(figure.scenario, None)
    return Sweep(plan.get("unit", "users"), float(plan["step_s"]), attainment, figures, capacity)


def _figures(
    scenario: str, step: int, levels: list[float], step_s: float, rows: pd.DataFrame
) -> StepFigures:
    ok = rows[rows["ok"].astype(bool)]
    met = rows["met_slo"].astype(float)
    ttft = percentiles(ok["ttft_ms"], (50, 99))
    return StepFigures(
        scenario=scenario,
        step=step,
        level=levels[step],
        requests=len(rows),
        ok=len(ok),
        met_slo_share=float(met.mean()) if len(rows) else None,
        requests_per_s=len(rows) / step_s,
        ttft_p50_ms=ttft[50],
        ttft_p99_ms=ttft[99],
        e2e_p99_ms=percentiles(ok["e2e_ms"], (99,))[99],
    )


def format_sweep(result: Sweep) -> list[str]:
    """The summary's lines: one per step and scenario, then the capacity per scenario."""
    unit = "users" if result.unit == "users" else "req/s"

    def cell(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"steps ({result.step_s:g} s each; within the SLOs: at least "
        f"{result.attainment:.0%} of a step's requests met them):",
        f"  {'scenario':<28} {'step':>4} {unit:>8} {'requests':>8} {'met SLO':>8} "
        f"{'req/s':>7} {'TTFT p50':>9} {'TTFT p99':>9} {'E2E p99':>9}",
    ]
    for f in result.steps:
        share = "-" if f.met_slo_share is None else f"{f.met_slo_share:.0%}"
        lines.append(
            f"  {f.scenario:<28} {f.step:>4} {f.level:>8g} {f.requests:>8} {share:>8} "
            f"{f.requests_per_s:>7.2f} {cell(f.ttft_p50_ms):>9} {cell(f.ttft_p99_ms):>9} "
            f"{cell(f.e2e_p99_ms):>9}"
        )
    for scenario, level in sorted(result.capacity.items()):
        found = f"{level:g} {unit}" if level is not None else "none (no step met the SLOs)"
        lines.append(f"capacity at SLO, {scenario}: {found}")
    return lines
