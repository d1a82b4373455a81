"""Headline numbers of a run: what cache reuse bought, per scenario.

Designed hits (requests the workload built to begin with a prefix the server has seen)
against designed misses, with the reuse the config asked for, the reuse the workload
realised and the reuse the server reported, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvswarm.analysis.runs import Run

__all__ = [
    "Headline",
    "configured_reuse",
    "headline_of",
    "headlines",
    "kv_store",
    "scenario_headline",
]


@dataclass(frozen=True)
class Headline:
    """One scenario of a run. Latencies in ms, shares in [0, 1]; None where nothing was
    measured or reported."""

    name: str
    requests: int
    ttft_p50_ms: float | None
    ttft_p50_hit_ms: float | None
    ttft_p50_miss_ms: float | None
    tpot_p50_ms: float | None
    requests_per_s: float | None
    output_tokens_per_s: float | None
    # The scenario's `reuse_ratio` in the run's config.
    configured_reuse: float | None
    # Share of requests the workload built as designed hits.
    designed_hit_share: float | None
    # Share of requests the server reported any cached prompt tokens for.
    server_hit_share: float | None
    # Sum of the server-reported cached tokens over the sum of prompt tokens.
    cached_share: float | None

    @property
    def ttft_drop(self) -> float | None:
        """How much lower a designed hit's median TTFT is than a miss's (0.65 = 65% lower)."""
        if not self.ttft_p50_hit_ms or not self.ttft_p50_miss_ms:
            return None
        return 1.0 - self.ttft_p50_hit_ms / self.ttft_p50_miss_ms


def _median(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(np.median(values.to_numpy(dtype=float))) if len(values) else None


def configured_reuse(run: Run, scenario: str) -> float | None:
    """A scenario's `reuse_ratio`, as the run recorded it (its workload summary, else
    its config)."""
    summary = run.record.workloads.get(scenario)
    if summary is not None:
        return summary.configured_reuse_ratio
    scenarios = run.record.config.get("scenarios") or {}
    entry = scenarios.get(scenario) if isinstance(scenarios, dict) else None
    ratio = entry.get("reuse_ratio") if isinstance(entry, dict) else None
    return float(ratio) if isinstance(ratio, int | float) else None


def kv_store(run: Run) -> str | None:
    """Which KV store served the run ("mooncake", "in-process", ...), as the server
    section of run.json names it; None when the run did not record one."""
    return getattr(run.record.server, "kv_store", None) or None


def headline_of(
    name: str,
    rows: pd.DataFrame,
    window_s: float | None,
    configured: float | None = None,
) -> Headline:
    ok = rows[rows["ok"]]
    hits, misses = ok[ok["expected_hit"]], ok[~ok["expected_hit"]]
    reported = ok.dropna(subset=["cached_tokens", "prompt_tokens"])
    prompt_total = float(reported["prompt_tokens"].sum())
    return Headline(
        name=name,
        requests=len(ok),
        ttft_p50_ms=_median(ok["ttft_ms"]),
        ttft_p50_hit_ms=_median(hits["ttft_ms"]),
        ttft_p50_miss_ms=_median(misses["ttft_ms"]),
        tpot_p50_ms=_median(ok["tpot_ms"]),
        requests_per_s=len(ok) / window_s if window_s else None,
        output_tokens_per_s=float(ok["output_tokens"].sum()) / window_s if window_s else None,
        configured_reuse=configured,
        designed_hit_share=float(ok["expected_hit"].mean()) if len(ok) else None,
        server_hit_share=float((reported["cached_tokens"] > 0).mean()) if len(reported) else None,
        cached_share=float(reported["cached_tokens"].sum()) / prompt_total
        if prompt_total
        else None,
    )


def scenario_headline(run: Run, scenario: str) -> Headline:
    """One scenario of a run, over the run's measurement window."""
    rows = run.measured
    rows = rows[rows["scenario"] == scenario]
    return headline_of(scenario, rows, run.window_s, configured_reuse(run, scenario))


def headlines(run: Run) -> list[Headline]:
    """One headline per scenario of the run, in name order. There is no whole-run row:
    pooling a cold-start baseline with reuse scenarios gives a median that describes none
    of them."""
    return [scenario_headline(run, str(name)) for name in sorted(run.measured["scenario"].unique())]
