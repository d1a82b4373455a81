"""The end-of-run summary: per scenario, counts, throughput and exact percentiles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kvswarm.analysis.metrics import failures_by_category, goodput_per_s, hit_split, percentiles
from kvswarm.analysis.outages import describe_outage, target_outages
from kvswarm.analysis.replay import replay_lines
from kvswarm.analysis.runs import TORN_LAST_LINE, Run, itl_values
from kvswarm.analysis.steps import format_sweep, sweep
from kvswarm.runrecord import CPU_SHARE_LIMIT, LOOP_LAG_P99_LIMIT_MS

PERCENTILES = (50, 90, 99)
METRICS = ("ttft", "tpot", "itl", "e2e")
# Open-loop runs: latencies from the scheduled send time as well.
SCHEDULED_METRICS = {"ttft_from_schedule": "TTFT*", "e2e_from_schedule": "E2E*"}


@dataclass(frozen=True)
class ScenarioSummary:
    """One scenario (or "all") of a run. Latencies in ms; None where nothing was measured."""

    scenario: str
    requests: int
    ok: int
    cancelled: int
    failures: dict[str, int]
    requests_per_s: float | None
    output_tokens_per_s: float | None
    # Successful requests/s that met the run's SLOs (TTFT, and TPOT where defined).
    goodput_per_s: float | None = None
    # metric -> percentile -> ms, e.g. latency["ttft"][99]
    latency: dict[str, dict[int, float | None]] = field(default_factory=dict)
    # The scenario's configured `reuse_ratio` (None: not in run.json), the share of
    # successful requests the design expected to hit the cache, and the share of their
    # prompt tokens the server reported as cached in usage (None: not reported).
    configured_reuse: float | None = None
    designed_hit_share: float | None = None
    cached_share: float | None = None
    # Successful requests split into hits and misses (`split_basis`: "cached tokens" where
    # the server reported them for every request, else "design"), with their TTFT p50/p90.
    split_basis: str = "design"
    hits: int = 0
    misses: int = 0
    ttft_hit_ms: dict[int, float | None] = field(default_factory=dict)
    ttft_miss_ms: dict[int, float | None] = field(default_factory=dict)


def _percentiles(values: pd.Series) -> dict[int, float | None]:
    values = values.dropna()
    if values.empty:
        return {p: None for p in PERCENTILES}
    computed = np.percentile(values.to_numpy(dtype=float), PERCENTILES)
    return {p: float(v) for p, v in zip(PERCENTILES, computed, strict=True)}


def summarize_rows(
    name: str,
    rows: pd.DataFrame,
    window_s: float | None,
    slo: dict[str, float] | None = None,
    configured_reuse: float | None = None,
) -> ScenarioSummary:
    """Exact percentiles over the successful rows; failures counted by category."""
    cancelled = rows["failure"] == "cancelled"
    ok_rows = rows[rows["ok"]]
    failed = rows[~rows["ok"] & ~cancelled]
    failures = failures_by_category(failed)
    rate = None if not window_s else len(ok_rows) / window_s
    tokens = None if not window_s else float(ok_rows["output_tokens"].sum()) / window_s
    latency = {
        "ttft": _percentiles(ok_rows["ttft_ms"]),
        "tpot": _percentiles(ok_rows["tpot_ms"]),
        "itl": _percentiles(itl_values(ok_rows)),
        "e2e": _percentiles(ok_rows["e2e_ms"]),
    }
    if "send_lag_ms" in ok_rows and ok_rows["send_lag_ms"].notna().any():
        # Open loop: measured from when the request was due, a late send's wait counts
        # (what a user arriving on the schedule would have seen).
        lag = ok_rows["send_lag_ms"]
        latency["ttft_from_schedule"] = _percentiles(ok_rows["ttft_ms"] + lag)
        latency["e2e_from_schedule"] = _percentiles(ok_rows["e2e_ms"] + lag)
    reported = ok_rows.dropna(subset=["cached_tokens", "prompt_tokens"])
    prompt_total = float(reported["prompt_tokens"].sum())
    split = hit_split(rows)
    return ScenarioSummary(
        scenario=name,
        goodput_per_s=goodput_per_s(rows, window_s, slo),
        split_basis=split.basis,
        hits=len(split.hits),
        misses=len(split.misses),
        ttft_hit_ms=percentiles(split.hits["ttft_ms"], (50, 90)),
        ttft_miss_ms=percentiles(split.misses["ttft_ms"], (50, 90)),
        configured_reuse=configured_reuse,
        designed_hit_share=float(ok_rows["expected_hit"].mean()) if len(ok_rows) else None,
        cached_share=float(reported["cached_tokens"].sum()) / prompt_total
        if prompt_total
        else None,
        requests=int(len(rows) - cancelled.sum()),
        ok=int(len(ok_rows)),
        cancelled=int(cancelled.sum()),
        failures=failures,
        requests_per_s=rate,
        output_tokens_per_s=tokens,
        latency=latency,
    )


def summarize(run: Run) -> list[ScenarioSummary]:
    """One summary per scenario, then one for all scenarios together when several ran."""
    requests = run.measured
    window = run.window_s
    slo = run.slo
    workloads = run.record.workloads
    summaries = [
        summarize_rows(
            str(name),
            rows,
            window,
            slo,
            workloads[str(name)].configured_reuse_ratio if str(name) in workloads else None,
        )
        for name, rows in requests.groupby("scenario", sort=True)
    ]
    if len(summaries) > 1:
        summaries.append(summarize_rows("all", requests, window, slo))
    return summaries


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _cache_line(s: ScenarioSummary) -> str:
    cached = (
        "not reported by the server"
        if s.cached_share is None
        else f"{s.cached_share:.0%} of prompt tokens"
    )
    configured = (
        f"configured {_share(s.configured_reuse)}, " if s.configured_reuse is not None else ""
    )
    return (
        f"reuse {configured}designed hits {_share(s.designed_hit_share)} of requests; "
        f"server-reported cached {cached}"
    )


def _split_line(s: ScenarioSummary) -> str:
    def side(word: str, n: int, ttft: dict[int, float | None]) -> str:
        if not n:
            return f"{word} 0"
        return f"{word} {n} (TTFT p50 {_cell(ttft.get(50), 2)}, p90 {_cell(ttft.get(90), 2)} ms)"

    return (
        f"{side('hits', s.hits, s.ttft_hit_ms)}, {side('misses', s.misses, s.ttft_miss_ms)}; "
        f"split by {s.split_basis}"
    )


def _server_line(run: Run) -> str | None:
    """The server's own counters over the window, where the engine reports them."""
    server = run.record.server
    if server is None or server.cached_share is None:
        return None
    formula = f" ({server.cached_share_formula})" if server.cached_share_formula else ""
    store = f"; KV store: {server.kv_store}" if server.kv_store else ""
    return (
        f"server counters over the window ({server.engine}): cached share "
        f"{server.cached_share:.0%}{formula}{store}"
    )


BOTTLENECK_WARNING = "warning: the load generator, not the server, was the bottleneck"


def _load_lines(run: Run) -> list[str]:
    """Each load-generating process's CPU and event-loop lag; one warning line first when
    one of them was busy enough to make TTFT and ITL late."""
    loads = run.record.load_generator
    if not loads:
        return []
    lines = []
    busy = [name for name, load in loads.items() if load.distorts_timing]
    if busy:
        lines.append(
            f"{BOTTLENECK_WARNING} ({', '.join(busy)}: event-loop lag p99 above "
            f"{LOOP_LAG_P99_LIMIT_MS:g} ms or CPU above {CPU_SHARE_LIMIT:.0%} of a core); "
            f"its TTFT and ITL include that wait"
        )
    for name, load in loads.items():
        lines.append(
            f"load generator {name} ({load.role}): CPU {load.cpu_share:.0%} of a core, "
            f"event-loop lag p50 {load.loop_lag_p50_ms:.2f} ms, p99 {load.loop_lag_p99_ms:.2f} "
            f"ms, max {load.loop_lag_max_ms:.1f} ms"
            + (
                f", clock {load.clock_offset_ms:+.2f} ms from the master's (round trip "
                f"{load.clock_rtt_ms:.2f} ms)"
                if load.clock_offset_ms is not None and load.clock_rtt_ms is not None
                else ""
            )
        )
    return lines


# An open-loop request that went this late found every user busy at its arrival.
LATE_MS = 10.0


def _send_lag_line(run: Run) -> str | None:
    """Open loop: how late requests went against their schedule."""
    if "send_lag_ms" not in run.requests:
        return None
    lags = run.requests["send_lag_ms"].dropna().to_numpy(dtype=float)
    if not len(lags):
        return None
    p50, p99 = np.percentile(lags, [50, 99])
    late = int((lags > LATE_MS).sum())
    advice = "; raise -u (the cap on requests in flight)" if late else ""
    return (
        f"open loop: send lag p50 {p50:.2f} ms, p99 {p99:.2f} ms; {late} of {len(lags)} "
        f"requests went more than {LATE_MS:g} ms after their scheduled time{advice}"
    )


# A wait between sending and the first token that the stack's own timings do not hold.
UNREPORTED_WAIT_MS = 1000.0
_STACK_PARTS = ("server_queue_ms", "server_prefill_ms", "server_transfer_ms")


def _warmup_line(run: Run) -> str | None:
    """How many requests were warm-up (flagged in requests.csv, in no figure below)."""
    flags = run.warmup_flags
    flagged = int(flags.sum()) if flags is not None else 0
    if not flagged:
        return None
    return (
        f"warm-up: {flagged} of {len(run.requests)} requests (requests.csv's warmup "
        "column), left out of every figure below"
    )


def _unreported_wait_line(run: Run) -> str | None:
    """A warning when requests waited far longer for their first token than the stack says
    it spent on them: TTFT − (queue + prefill + transfer, as the stack reported them) over
    UNREPORTED_WAIT_MS, and over the stack's own time. On llama.cpp with many slots a burst
    of long prompts starves the last slots served, and `prompt_ms` starts only when a
    slot's prompt enters a batch (bench/README.md, "Against a real GPU engine")."""
    requests = run.requests
    if "server_prefill_ms" not in requests or "ttft_ms" not in requests:
        return None
    reported = requests[requests["ok"].astype(bool) & requests["server_prefill_ms"].notna()]
    if reported.empty:
        return None
    parts = [column for column in _STACK_PARTS if column in reported]
    stack_ms = reported[parts].fillna(0.0).sum(axis=1).to_numpy(dtype=float)
    gaps = reported["ttft_ms"].to_numpy(dtype=float) - stack_ms
    waited = int(((gaps > UNREPORTED_WAIT_MS) & (gaps > stack_ms)).sum())
    if not waited:
        return None
    p50, p99, worst = np.percentile(gaps, [50, 99, 100])
    return (
        f"warning: {waited} of {len(gaps)} requests waited more than "
        f"{UNREPORTED_WAIT_MS:g} ms for their first token beyond the server's own account "
        f"of them (TTFT − server queue/prefill/transfer: p50 {p50:.0f}, p99 {p99:.0f}, "
        f"max {worst:.0f} ms); the server's timings do not show this wait"
    )


def format_summary(
    summaries: list[ScenarioSummary], results_dir: str, run: Run | None = None
) -> str:
    """A compact text table: counts and throughput, then p50/p90/p99 per metric; with the
    run, its status when it did not finish, the server's own cache figures and each
    load-generating process's CPU and loop lag (with a warning when they distort timing)."""
    lines = ["kvswarm summary (latencies in ms; exact percentiles over successful requests)"]
    if run is not None and run.record.status not in ("finished", "running"):
        lines.append(f"run {run.record.status}: {run.record.status_reason}")
    if run is not None and run.record.status == "running" and run.record.started_at:
        lines.append(
            "run not closed: run.json says it is still running (if its process was killed, "
            "the requests of its last seconds are missing and its throughput is unknown)"
        )
    if run is not None and run.requests.attrs.get(TORN_LAST_LINE):
        lines.append(
            "requests.csv ended in a cut-off line (the run was killed while writing it): "
            "that request is left out"
        )
    if run is not None and (server_line := _server_line(run)):
        lines.append(server_line)
    if run is not None:
        lines.extend(_load_lines(run))
        lines.extend(describe_outage(outage) for outage in target_outages(run.requests))
        if run.record.replay:
            lines.extend(replay_lines(run.record.replay))
        elif lag_line := _send_lag_line(run):
            lines.append(lag_line)
        if warmup_line := _warmup_line(run):
            lines.append(warmup_line)
        if wait_line := _unreported_wait_line(run):
            lines.append(wait_line)
    if not summaries:
        lines.append("  no requests were recorded")
    for s in summaries:
        failures = ", ".join(f"{k} {v}" for k, v in s.failures.items()) or "none"
        lines.append("")
        lines.append(
            f"{s.scenario}: {s.requests} requests, {s.ok} ok, failures: {failures}"
            + (f", {s.cancelled} cancelled at stop" if s.cancelled else "")
        )
        lines.append(
            f"  throughput: {_cell(s.requests_per_s, 2)} req/s, "
            f"{_cell(s.output_tokens_per_s, 1)} output tok/s, "
            f"goodput {_cell(s.goodput_per_s, 2)} req/s within the SLOs"
        )
        lines.append(f"  cache: {_cache_line(s)}")
        lines.append(f"  {_split_line(s)}")
        lines.append(f"  {'metric':<6} {'p50':>10} {'p90':>10} {'p99':>10}")
        for metric in METRICS:
            values = s.latency[metric]
            cells = " ".join(f"{_cell(values[p], 2):>10}" for p in PERCENTILES)
            lines.append(f"  {metric.upper():<6} {cells}")
        for metric, label in SCHEDULED_METRICS.items():
            if metric in s.latency:
                cells = " ".join(f"{_cell(s.latency[metric][p], 2):>10}" for p in PERCENTILES)
                lines.append(f"  {label:<6} {cells}")
        if any(metric in s.latency for metric in SCHEDULED_METRICS):
            lines.append("  (TTFT*, E2E*: from the scheduled send time, the send lag included)")
    if run is not None and (stepped := sweep(run)) is not None:
        lines.append("")
        lines.extend(format_sweep(stepped))
    lines.append("")
    lines.append(f"results: {results_dir}")
    return "\n".join(lines) + "\n"
