"""A trace replay held against its trace: rows sent, schedule kept, lengths, hit rates.

For each scenario of type `trace`, from requests.csv (`trace_row`, `send_lag_ms`,
`prompt_tokens`, `cached_tokens`) and the trace itself (read again with the run's config):

- the rows sent (distinct `trace_row`) against the selection, and any row sent twice;
- the send lag p50/p90/p99; the replay is *degraded* when p99 exceeds the scenario's
  `lag_bound_ms` (default 50): the trace's timing was not kept, and its latencies were
  measured at a lower load than the trace's;
- the trace's `input_length` against the server's `prompt_tokens` over the same rows: more
  than 2% apart means the prompts were not the length the trace says (a block size or
  tokenizer that does not match the served model's);
- the theoretical prefix hit rate of the rows sent (an infinite cache, the rows in trace
  order: kvswarm.workloads.trace_hits) against the server's: `cached_tokens /
  prompt_tokens` in usage, and the server's own counters over the window. Within 2 points
  they agree; a server below the theoretical rate held less than the trace reuses (a cache
  smaller than the working set, evictions, requests in flight together that cannot share
  what neither has finished), and one above it matched more than whole blocks.

The plugin writes these into run.json (`replay`) when a run closes; the summary and the
report read them from there, so a run moved away from its trace still reports them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kvswarm.analysis.runs import Run
from kvswarm.config import ScenarioConfig
from kvswarm.engines import engine_profile
from kvswarm.errors import KvswarmError
from kvswarm.runrecord import HIT_RATE_AGREEMENT_POINTS, ReplaySection
from kvswarm.workloads.trace import scenario_trace
from kvswarm.workloads.trace_hits import infinite_cache_hits

__all__ = ["hit_rate_words", "replay_lines", "replay_sections"]


def replay_sections(run: Run) -> dict[str, ReplaySection]:
    """Per trace scenario of the run's config, its replay against the trace (`ConfigError`
    or `KvswarmError` when the trace cannot be read)."""
    scenarios = (run.record.config or {}).get("scenarios") or {}
    sections: dict[str, ReplaySection] = {}
    for name, raw in scenarios.items():
        if (raw or {}).get("type") != "trace":
            continue
        rows = run.requests[run.requests["scenario"] == name]
        if "trace_row" not in rows or rows["trace_row"].isna().all():
            continue
        sections[name] = _section(run, name, ScenarioConfig(**raw), rows)
    return sections


def _section(run: Run, name: str, config: ScenarioConfig, rows: pd.DataFrame) -> ReplaySection:
    selection = scenario_trace(name, config)
    sent_rows = rows.dropna(subset=["trace_row"])
    sent_indices = set(sent_rows["trace_row"].astype(int))
    sent = [row for row in selection.rows if row.index in sent_indices]
    lags = sent_rows["send_lag_ms"].dropna().to_numpy(dtype=float)
    p50, p90, p99 = (float(v) for v in np.percentile(lags, [50, 90, 99])) if lags.size else (
        None, None, None)  # fmt: skip
    hits = infinite_cache_hits(sent, config.block_tokens)
    inputs = sum(row.input_length for row in sent)
    reported = sent_rows[sent_rows["ok"]].dropna(subset=["prompt_tokens"])
    reported = reported.drop_duplicates(subset=["trace_row"])
    lengths = {row.index: row.input_length for row in sent}
    trace_tokens = int(sum(lengths[int(i)] for i in reported["trace_row"]))
    server_tokens = int(reported["prompt_tokens"].sum()) if len(reported) else None
    cached = reported.dropna(subset=["cached_tokens"])
    cached_prompt = float(cached["prompt_tokens"].sum())
    server_rate = float(cached["cached_tokens"].sum()) / cached_prompt if cached_prompt else None
    theoretical = float(hits.sum()) / inputs if inputs else 0.0
    counters = run.record.server.cached_share if run.record.server is not None else None
    return ReplaySection(
        trace=selection.trace.path,
        block_tokens=config.block_tokens,
        rows_selected=len(selection.rows),
        rows_sent=len(sent_indices),
        rows_sent_twice=len(sent_rows) - len(sent_indices),
        output_control=_output_control(run),
        lag_p50_ms=p50,
        lag_p90_ms=p90,
        lag_p99_ms=p99,
        lag_bound_ms=config.lag_bound_ms,
        degraded=p99 is not None and p99 > config.lag_bound_ms,
        trace_input_tokens=trace_tokens,
        server_prompt_tokens=server_tokens,
        prompt_tokens_difference=(
            server_tokens / trace_tokens - 1.0
            if server_tokens is not None and trace_tokens
            else None
        ),  # fmt: skip
        theoretical_hit_rate=theoretical,
        server_hit_rate=server_rate,
        server_counter_hit_rate=counters,
        gap_points=(server_rate - theoretical) * 100 if server_rate is not None else None,
    )


def _output_control(run: Run) -> str:
    """What the requests carried to make the server generate each row's output_length."""
    parts = ["max_tokens"]
    if ((run.record.config or {}).get("generation") or {}).get("ignore_eos", True):
        parts.append("ignore_eos")
    try:
        if engine_profile(run.record.engine).min_tokens:
            parts.append("min_tokens")
    except KvswarmError:
        pass  # an engine this kvswarm does not know: no min_tokens was sent by it either
    return " + ".join(parts)


def hit_rate_words(section: ReplaySection) -> str:
    """What the realised against the theoretical hit rate says, in words."""
    gap = section.gap_points
    if gap is None:
        return "the server reported no cached tokens, so its hit rate is unknown"
    if abs(gap) <= HIT_RATE_AGREEMENT_POINTS:
        return (
            f"the server realised the trace's theoretical rate (within "
            f"{HIT_RATE_AGREEMENT_POINTS:g} points)"
        )
    if gap < 0:
        return (
            f"the server's cache served {-gap:.1f} points less than the trace allows: it held "
            "less than the trace reuses (a cache smaller than the working set, evictions, or "
            "requests in flight together that could not share a prefix neither had finished)"
        )
    return (
        f"the server served {gap:.1f} points more than whole-block prefix reuse allows "
        "(it matched partial blocks, or text the trace's blocks happen to share)"
    )


def replay_lines(sections: dict[str, ReplaySection]) -> list[str]:
    """The summary's lines on each replay."""
    lines: list[str] = []
    for name, s in sorted(sections.items()):
        verdict = (
            f"DEGRADED: send lag p99 {s.lag_p99_ms:.1f} ms is above lag_bound_ms "
            f"{s.lag_bound_ms:g}, so the trace's timing was not kept"
            if s.degraded
            else f"schedule kept (lag p99 within {s.lag_bound_ms:g} ms)"
        )
        lag = (
            f"send lag p50 {s.lag_p50_ms:.2f} / p90 {s.lag_p90_ms:.2f} / p99 {s.lag_p99_ms:.2f} ms"
            if s.lag_p99_ms is not None
            else "no scheduled sends (a trace without timestamps)"
        )
        twice = f", {s.rows_sent_twice} sent twice" if s.rows_sent_twice else ""
        lines.append(
            f"trace replay {name}: {s.rows_sent} of {s.rows_selected} rows sent{twice} "
            f"(output lengths by {s.output_control}); {lag}; {verdict}"
        )
        server = "-" if s.server_hit_rate is None else f"{s.server_hit_rate:.1%}"
        counters = (
            "" if s.server_counter_hit_rate is None
            else f", server counters {s.server_counter_hit_rate:.1%}"
        )  # fmt: skip
        lines.append(
            f"  prefix hit rate: theoretical {s.theoretical_hit_rate:.1%} for the rows sent, "
            f"server {server} (cached_tokens){counters}: {hit_rate_words(s)}"
        )
        if s.server_prompt_tokens is not None:
            difference = s.prompt_tokens_difference or 0.0
            line = (
                f"  prompt tokens: trace {s.trace_input_tokens}, server {s.server_prompt_tokens}"
                f" ({difference:+.1%})"
            )
            if s.prompt_tokens_off:
                line += (
                    "; WARNING: more than 2% apart, so the prompts were not the trace's "
                    "lengths (check block_tokens and the tokenizer kvswarm sized them with)"
                )
            lines.append(line)
    return lines
