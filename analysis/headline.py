"""Headline numbers of a run: what cache reuse bought, per scenario and overall."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvswarm.analysis.runs import Run


@dataclass(frozen=True)
class Headline:
    """One run (or one scenario of it). Latencies in ms; None where nothing was measured."""

    name: str
    requests: int
    ttft_p50_hit_ms: float | None
    ttft_p50_miss_ms: float | None
    tpot_p50_ms: float | None
    requests_per_s: float | None
    output_tokens_per_s: float | None
    # Sum of the server-reported cached tokens over the sum of prompt tokens.
    cached_share: float | None
    designed_hit_share: float | None

    @property
    def ttft_drop(self) -> float | None:
        """How much lower a designed hit's median TTFT is than a miss's (0.65 = 65% lower)."""
        if not self.ttft_p50_hit_ms or not self.ttft_p50_miss_ms:
            return None
        return 1.0 - self.ttft_p50_hit_ms / self.ttft_p50_miss_ms


def _median(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(np.median(values.to_numpy(dtype=float))) if len(values) else None


def headline_of(name: str, rows: pd.DataFrame, window_s: float | None) -> Headline:
    ok = rows[rows["ok"]]
    hits, misses = ok[ok["expected_hit"]], ok[~ok["expected_hit"]]
    reported = ok.dropna(subset=["cached_tokens", "prompt_tokens"])
    prompt_total = float(reported["prompt_tokens"].sum())
    return Headline(
        name=name,
        requests=len(ok),
        ttft_p50_hit_ms=_median(hits["ttft_ms"]),
        ttft_p50_miss_ms=_median(misses["ttft_ms"]),
        tpot_p50_ms=_median(ok["tpot_ms"]),
        requests_per_s=len(ok) / window_s if window_s else None,
        output_tokens_per_s=float(ok["output_tokens"].sum()) / window_s if window_s else None,
        cached_share=float(reported["cached_tokens"].sum()) / prompt_total
        if prompt_total
        else None,
        designed_hit_share=float(ok["expected_hit"].mean()) if len(ok) else None,
    )


def headlines(run: Run) -> list[Headline]:
    """Per scenario, then the whole run."""
    window = run.window_s
    rows = run.measured
    per_scenario = [
        headline_of(str(name), group, window) for name, group in rows.groupby("scenario")
    ]
    return [*per_scenario, headline_of("all", rows, window)]
