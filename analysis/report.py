"""The single-run report (`kvswarm report`): setup, summary, exact percentiles, hits vs
misses, the PD split, the server's own figures and charts, as a `Document`.

A run loaded from a Locust `--csv` prefix alone gets what Locust's files allow: counts,
throughput, Locust's (bucket-rounded) percentiles and the history charts.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvswarm.analysis import charts
from kvswarm.analysis.document import Chart, Document, Section, Table, cell, share_cell
from kvswarm.analysis.locustcsv import LOCUST_PERCENTILES
from kvswarm.analysis.metrics import (
    LATENCY_COLUMNS,
    PD_COLUMNS,
    REPORT_PERCENTILES,
    failures_by_category,
    goodput_per_s,
    hit_split,
    median,
    percentiles,
    successful,
    throughput,
    time_series,
)
from kvswarm.analysis.replay import hit_rate_words
from kvswarm.analysis.runs import Run
from kvswarm.analysis.steps import Sweep, sweep
from kvswarm.runrecord import ReplaySection

__all__ = ["CHARTS_DIR", "build_report", "scenario_names", "time_bin_s"]

CHARTS_DIR = "charts"
METRIC_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E"}
PERCENTILE_HEADERS = tuple("max" if p == 100 else f"p{p}" for p in REPORT_PERCENTILES)


def scenario_names(run: Run) -> list[str]:
    if not run.has_requests:
        assert run.locust is not None
        return sorted(str(n) for n in run.locust.rows("LLM")["Name"])
    return list(run.scenarios)


def by_scenario(run: Run) -> dict[str, pd.DataFrame]:
    return run.scenarios


def time_bin_s(window_s: float | None) -> float:
    """About 30 bins over the window, at least one second each."""
    return max(1.0, round((window_s or 30.0) / 30.0))


def _setup_table(run: Run) -> Table:
    r = run.record
    tokens = r.tokens or {}
    sizing = "; ".join(
        f"{process}: {v.get('method', '?')} ({v.get('detail', '')})" if isinstance(v, dict)
        else f"{process}: {v}"
        for process, v in sorted(tokens.items())
    ) or "-"  # fmt: skip
    prompts = "; ".join(
        f"{name}: mean {w.prompt_tokens.achieved_mean:.0f} "
        f"(target {w.prompt_tokens.target_mean:.0f})"
        for name, w in sorted(r.workloads.items())
    ) or "-"  # fmt: skip
    window = run.window_s
    rows = [
        ("run", r.run_id or run.name),
        ("status", r.status + (f" ({r.status_reason})" if r.status_reason else "")),
        ("scenarios", ", ".join(scenario_names(run)) or "-"),
        ("mode", r.mode),
        ("engine", r.engine),
        ("model", r.model or "-"),
        ("target", r.target or "-"),
        ("users", cell(r.locust.users)),
        ("spawn rate (users/s)", cell(r.locust.spawn_rate)),
        ("window (s, warm-up excluded)", cell(window, 1)),
        ("warm-up (s)", cell(run.warmup_s, 1)),
        ("token sizing", sizing),
        ("prompt tokens achieved", prompts),
        ("KV store", (r.server.kv_store if r.server else None) or "-"),
        (
            "SLOs",
            ", ".join(f"{k} {v:g}" for k, v in (run.slo or {}).items() if v is not None) or "-",
        ),
    ]
    return Table("", ("setting", "value"), tuple(rows))


def summary_rows(run: Run) -> list[dict[str, Any]]:
    """Per scenario: counts, failures by category, throughput and goodput."""
    out = []
    for name, rows in by_scenario(run).items():
        cancelled = int((rows["failure"].astype("string") == "cancelled").sum())
        rate = throughput(rows, run.window_s)
        out.append({
            "scenario": name,
            "requests": int(len(rows) - cancelled),
            "ok": int(rows["ok"].sum()),
            "failures": failures_by_category(rows),
            "cancelled": cancelled,
            "requests_per_s": rate.requests_per_s,
            "output_tokens_per_s": rate.output_tokens_per_s,
            "total_tokens_per_s": rate.total_tokens_per_s,
            "goodput_per_s": goodput_per_s(rows, run.window_s, run.slo),
        })  # fmt: skip
    return out


def _locust_summary_rows(run: Run) -> list[dict[str, Any]]:
    assert run.locust is not None
    out = []
    for _, row in run.locust.rows("LLM").iterrows():
        out.append({
            "scenario": str(row["Name"]),
            "requests": int(row["Request Count"]),
            "ok": int(row["Request Count"] - row["Failure Count"]),
            "failures": {"(Locust: all categories)": int(row["Failure Count"])}
            if row["Failure Count"] else {},
            "cancelled": 0,
            "requests_per_s": float(row["Requests/s"]),
            "output_tokens_per_s": float(row["Requests/s"] * row["Average Content Size"]),
            "total_tokens_per_s": None,
            "goodput_per_s": None,
        })  # fmt: skip
    return out


def _summary_table(rows: list[dict[str, Any]]) -> Table:
    def failures(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    return Table(
        "",
        ("scenario", "requests", "ok", "failures", "req/s", "output tok/s", "total tok/s",
         "goodput req/s"),
        tuple(
            (r["scenario"], cell(r["requests"]), cell(r["ok"]), failures(r["failures"]),
             cell(r["requests_per_s"], 3), cell(r["output_tokens_per_s"], 1),
             cell(r["total_tokens_per_s"], 1), cell(r["goodput_per_s"], 3))
            for r in rows
        ),
        "Throughput over the measurement window (warm-up excluded), successful requests only; "
        "goodput: successful requests/s within the run's TTFT and TPOT SLOs.",
    )  # fmt: skip


def latency_rows(run: Run) -> list[dict[str, Any]]:
    """Per scenario and metric: n and exact percentiles (ms) over successful requests."""
    out = []
    for name, rows in by_scenario(run).items():
        ok = successful(rows)
        values = {m: ok[c].to_numpy(dtype=float) for m, c in LATENCY_COLUMNS.items()}
        values["itl"] = run.itl.of(ok)
        for metric in ("ttft", "tpot", "itl", "e2e"):
            v = values[metric]
            n = int(np.count_nonzero(~np.isnan(v)))
            out.append({"scenario": name, "metric": metric, "n": n, "ms": percentiles(v)})
    return out


def _locust_latency_rows(run: Run) -> list[dict[str, Any]]:
    assert run.locust is not None
    out = []
    for metric, kind in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "LLM")):
        for _, row in run.locust.rows(kind).iterrows():
            ms = {p: float(row[c]) for p, c in LOCUST_PERCENTILES.items()}
            out.append({"scenario": str(row["Name"]), "metric": metric,
                        "n": int(row["Request Count"]), "ms": ms})  # fmt: skip
    return sorted(out, key=lambda r: r["scenario"])


def _latency_table(rows: list[dict[str, Any]], note: str) -> Table:
    return Table(
        "",
        ("scenario", "metric", "n", *(f"{h} (ms)" for h in PERCENTILE_HEADERS)),
        tuple(
            (r["scenario"], METRIC_NAMES[r["metric"]], cell(r["n"]),
             *(cell(r["ms"][p]) for p in REPORT_PERCENTILES))
            for r in rows
        ),
        note,
    )  # fmt: skip


def cache_rows(run: Run) -> list[dict[str, Any]]:
    """Per scenario: hits and misses (and on what basis) with their TTFT, and configured,
    designed and server-reported reuse."""
    out = []
    for name, rows in by_scenario(run).items():
        split = hit_split(rows)
        ok = successful(rows)
        reported = ok.dropna(subset=["cached_tokens", "prompt_tokens"])
        prompt_total = float(reported["prompt_tokens"].sum())
        hit_p50 = median(split.hits["ttft_ms"])
        miss_p50 = median(split.misses["ttft_ms"])
        workload = run.record.workloads.get(name)
        out.append({
            "scenario": name,
            "basis": split.basis,
            "hits": len(split.hits),
            "misses": len(split.misses),
            "ttft_hit_ms": percentiles(split.hits["ttft_ms"], (50, 90)),
            "ttft_miss_ms": percentiles(split.misses["ttft_ms"], (50, 90)),
            "ttft_reduction": 1.0 - hit_p50 / miss_p50 if hit_p50 and miss_p50 else None,
            "configured_reuse": workload.configured_reuse_ratio if workload else None,
            "designed_hit_share": float(ok["expected_hit"].mean()) if len(ok) else None,
            "server_hit_share": float((reported["cached_tokens"] > 0).mean())
            if len(reported) else None,
            "cached_token_share": float(reported["cached_tokens"].sum()) / prompt_total
            if prompt_total else None,
        })  # fmt: skip
    return out


def _cache_table(rows: list[dict[str, Any]]) -> Table:
    return Table(
        "",
        ("scenario", "split by", "hits", "misses", "TTFT p50 hit (ms)", "TTFT p50 miss (ms)",
         "TTFT p90 hit (ms)", "TTFT p90 miss (ms)", "TTFT cut", "reuse configured",
         "designed hits", "server-reported hits", "cached tokens"),
        tuple(
            (r["scenario"], r["basis"], cell(r["hits"]), cell(r["misses"]),
             cell(r["ttft_hit_ms"][50]), cell(r["ttft_miss_ms"][50]),
             cell(r["ttft_hit_ms"][90]), cell(r["ttft_miss_ms"][90]),
             share_cell(r["ttft_reduction"]), share_cell(r["configured_reuse"]),
             share_cell(r["designed_hit_share"]), share_cell(r["server_hit_share"]),
             share_cell(r["cached_token_share"]))
            for r in rows
        ),
        "split by cached tokens: a hit is a request the server reported cached prompt tokens "
        "for (every request reported them); by design: the workload's designed hits. TTFT "
        "cut: 1 - p50 hit / p50 miss. server-reported hits: share of requests with cached "
        "tokens > 0; cached tokens: their sum over the sum of prompt tokens.",
    )  # fmt: skip


def pd_rows(run: Run) -> list[dict[str, Any]]:
    """Per scenario with a recorded PD split: p50/p90 of each server-side phase."""
    out = []
    for name, rows in by_scenario(run).items():
        ok = successful(rows)
        if not ok[list(PD_COLUMNS.values())].notna().any().any():
            continue
        for phase, column in PD_COLUMNS.items():
            ms = percentiles(ok[column], (50, 90, 99))
            n = int(ok[column].notna().sum())
            out.append({"scenario": name, "phase": phase, "n": n, "ms": ms})
    return out


def _pd_table(rows: list[dict[str, Any]]) -> Table:
    return Table(
        "",
        ("scenario", "phase", "n", "p50 (ms)", "p90 (ms)", "p99 (ms)"),
        tuple(
            (
                r["scenario"],
                r["phase"],
                cell(r["n"]),
                cell(r["ms"][50]),
                cell(r["ms"][90]),
                cell(r["ms"][99]),
            )
            for r in rows
        ),  # fmt: skip
        "Per request, as the stack reported it (server_prefill_ms, server_transfer_ms, "
        "server_decode_ms): prefill on the prefiller, KV transfer to the decoder, decode.",
    )


def _server_section(run: Run) -> Section:
    server = run.record.server
    if server is None:
        return Section("Server figures", ("run.json has no server section (no metrics read).",))
    rows = [
        ("engine", server.engine),
        ("cache semantics", server.cache_semantics or "-"),
        ("cached share (server counters)", share_cell(server.cached_share)),
        ("formula", server.cached_share_formula or "-"),
        ("summed over", ", ".join(server.cached_share_sources) or "-"),
        ("external (KV connector) cached share", share_cell(server.external_cached_share)),
        ("KV store", server.kv_store or "-"),
        ("warnings", "; ".join(server.warnings) or "none"),
    ]
    return Section("Server figures", ("From run.json's server section, over the "
                                      "measurement window.",),
                   (Table("", ("figure", "value"), tuple(rows)),))  # fmt: skip


def _hit_rates_section(run: Run) -> Section:
    """The hit rate three ways, each labelled: client-side (usage's cached tokens), the
    server's counters, and the sampled window's derived figures (store counters)."""
    ok = run.requests[run.requests["ok"]]
    reported = ok.dropna(subset=["cached_tokens", "prompt_tokens"])
    prompt = float(reported["prompt_tokens"].sum())
    client = float(reported["cached_tokens"].sum()) / prompt if prompt else None
    server = run.record.server
    rows = [
        ("client: cached / prompt tokens in usage", share_cell(client),
         "sum of cached_tokens / sum of prompt_tokens over successful requests"),
        ("server counters", share_cell(server.cached_share if server else None),
         (server.cached_share_formula or "-") if server else "-"),
    ]  # fmt: skip
    sampled = run.record.server_metrics
    if sampled is not None:
        for name, figure in sorted(sampled.derived.items()):
            value = (
                share_cell(figure.value)
                if figure.unit == "ratio"
                else ("-" if figure.value is None else f"{figure.value:.4g} {figure.unit}")
            )
            rows.append((f"sampled window: {name}", value, figure.formula))
    note = (
        "Sampled every few seconds into server_metrics.jsonl; run.json's server_metrics."
        if sampled is not None
        else "No sampled server metrics in this run (run.json has no server_metrics)."
    )
    return Section(
        "Hit rates, three ways",
        (note,),
        (Table("", ("source", "value", "formula"), tuple(rows)),),
    )


def _charts(run: Run, out_dir: Path) -> list[Chart]:
    scenarios = by_scenario(run)
    start = run.record.window.measure_start_unix_s
    width = time_bin_s(run.window_s)
    made: list[Chart | None] = []
    for metric, column in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms")):
        groups = {}
        for name, rows in scenarios.items():
            split = hit_split(rows)
            groups[f"{name} hits"] = split.hits[column].to_numpy(dtype=float)
            groups[f"{name} misses"] = split.misses[column].to_numpy(dtype=float)
        title = f"{metric} CDF, hits vs misses"
        path = f"{CHARTS_DIR}/{metric.lower()}_cdf.png"
        made.append(charts.cdf_chart(groups, title, f"{metric} (ms)", out_dir, path))
    series = {name: time_series(rows, start, width) for name, rows in scenarios.items()}
    made.append(charts.series_chart(
        series, {"ttft_p50_ms": "p50", "ttft_p90_ms": "p90", "ttft_p99_ms": "p99"},
        f"TTFT percentiles over time ({width:g} s bins)", "TTFT (ms)", out_dir,
        f"{CHARTS_DIR}/ttft_over_time.png"))  # fmt: skip
    made.append(charts.series_chart(
        series, {"output_tokens_per_s": ""}, f"Output throughput over time ({width:g} s bins)",
        "output tokens/s", out_dir, f"{CHARTS_DIR}/throughput_over_time.png"))  # fmt: skip
    made.append(charts.scatter_chart(
        {name: ((rows["prompt_tokens"] - rows["cached_tokens"].fillna(0)).to_numpy(dtype=float),
                rows["ttft_ms"].to_numpy(dtype=float))
         for name, rows in ((n, successful(r)) for n, r in scenarios.items())},
        "TTFT vs uncached prompt tokens", "uncached prompt tokens (prompt - cached)",
        "TTFT (ms)", out_dir, f"{CHARTS_DIR}/ttft_vs_uncached_tokens.png"))  # fmt: skip
    made.append(charts.failures_chart(series, out_dir, f"{CHARTS_DIR}/failures_over_time.png"))
    phases = {}
    for name, rows in scenarios.items():
        ok = successful(rows)
        if ok[list(PD_COLUMNS.values())].notna().any().any():
            phases[name] = {p: median(ok[c]) for p, c in PD_COLUMNS.items()}
    if phases:
        made.append(charts.pd_phase_chart(phases, out_dir, f"{CHARTS_DIR}/pd_phases.png"))
    return [c for c in made if c is not None]


def _locust_charts(run: Run, out_dir: Path) -> list[Chart]:
    assert run.locust is not None
    history = run.locust.history
    if history is None or history.empty:
        return []
    aggregated = history[history["Name"] == "Aggregated"].copy()
    aggregated["t_s"] = aggregated["Timestamp"] - aggregated["Timestamp"].min()
    made = [
        charts.series_chart({"all request types": aggregated}, {"Requests/s": ""},
                            "Locust events per second over time (every type)", "events/s",
                            out_dir, f"{CHARTS_DIR}/locust_rate_over_time.png"),
        charts.series_chart({"all request types": aggregated}, {"50%": "p50", "99%": "p99"},
                            "Locust response-time percentiles over time (every type)",
                            "response time (ms)", out_dir,
                            f"{CHARTS_DIR}/locust_latency_over_time.png"),
    ]  # fmt: skip
    return [c for c in made if c is not None]


def build_report(run: Run, out_dir: Path, with_charts: bool = True) -> Document:
    """The run's report; charts are written under `out_dir/charts/`."""
    if not run.has_requests:
        return _locust_report(run, out_dir, with_charts)
    summary, latency, cache, pd_split = (summary_rows(run), latency_rows(run), cache_rows(run),
                                         pd_rows(run))  # fmt: skip
    sections = [
        Section("Setup", tables=(_setup_table(run),)),
        Section("Summary", tables=(_summary_table(summary),)),
        Section(
            "Latency percentiles",
            tables=(
                _latency_table(
                    latency,
                    "Exact percentiles over every successful request (ITL: over every "
                    "inter-token gap); max = the largest value.",
                ),
            ),
        ),  # fmt: skip
        Section("Cache hits vs misses", tables=(_cache_table(cache),)),
        Section(
            "PD split",
            tables=(_pd_table(pd_split),) if pd_split else (),
            paragraphs=() if pd_split else ("No per-request PD split was recorded.",),
        ),
        _server_section(run),
        _hit_rates_section(run),
    ]
    stepped = sweep(run)
    if stepped is not None:
        sections.insert(2, _steps_section(stepped, run.record.mode))
    if run.record.replay:
        sections.insert(2, _replay_section(run.record.replay))
    if with_charts:
        sections.append(Section("Charts", charts=tuple(_charts(run, out_dir))))
    data = {"run": run.name, "mode": run.record.mode, "summary": summary, "latency": latency,
            "cache": cache, "pd_split": pd_split,
            "steps": _steps_data(stepped),
            "replay": {name: r.to_dict() for name, r in run.record.replay.items()} or None,
            "server": run.record.server.to_dict() if run.record.server else None}  # fmt: skip
    return Document("report", f"kvswarm report: {run.name}", (_intro(run),), tuple(sections), data)


def _replay_section(replays: dict[str, ReplaySection]) -> Section:
    """Trace replays: the rows and schedule kept, lengths, realised vs theoretical hits."""
    sent = Table(
        "Rows and schedule",
        ("scenario", "rows sent", "of", "sent twice", "lag p50 (ms)", "lag p90 (ms)",
         "lag p99 (ms)", "bound (ms)", "verdict"),
        tuple(
            (name, str(r.rows_sent), str(r.rows_selected), str(r.rows_sent_twice),
             cell(r.lag_p50_ms), cell(r.lag_p90_ms), cell(r.lag_p99_ms), f"{r.lag_bound_ms:g}",
             "DEGRADED" if r.degraded else "kept")
            for name, r in sorted(replays.items())
        ),
        "Send lag: each row's actual send time minus its scheduled time (the trace's "
        "timestamp x time_scale after the common start). A replay is degraded when the "
        "lag p99 exceeds the scenario's lag_bound_ms: the trace's timing was not kept.",
    )  # fmt: skip
    hits = Table(
        "Realised vs theoretical prefix hit rate",
        ("scenario", "theoretical", "server (cached_tokens)", "server counters", "gap (points)",
         "trace input tokens", "server prompt tokens", "difference"),
        tuple(
            (name, share_cell(r.theoretical_hit_rate), share_cell(r.server_hit_rate),
             share_cell(r.server_counter_hit_rate), cell(r.gap_points, 1),
             str(r.trace_input_tokens), cell(r.server_prompt_tokens),
             share_cell(r.prompt_tokens_difference))
            for name, r in sorted(replays.items())
        ),
        "Theoretical: the share of the rows sent's input tokens an infinite prefix cache "
        "could serve, in trace order, whole blocks only. Server: cached / prompt tokens in "
        "usage over the rows sent, and the server's own counters over the window.",
    )  # fmt: skip
    words = tuple(
        f"{name}: {hit_rate_words(r)}."
        + (" Prompt tokens more than 2% off the trace's: check block_tokens and the "
           "tokenizer." if r.prompt_tokens_off else "")
        for name, r in sorted(replays.items())
    )  # fmt: skip
    return Section("Trace replay", paragraphs=words, tables=(sent, hits))


def _steps_section(stepped: Sweep, mode: str) -> Section:
    """A --kv-steps sweep: each step's figures, and the capacity at SLO per scenario."""
    unit = "users" if stepped.unit == "users" else "req/s"
    steps = Table(
        "",
        ("scenario", "step", unit, "requests", "met SLO", "req/s", "TTFT p50 (ms)",
         "TTFT p99 (ms)", "E2E p99 (ms)"),
        tuple(
            (f.scenario, str(f.step), f"{f.level:g}", str(f.requests),
             share_cell(f.met_slo_share), f"{f.requests_per_s:.2f}", cell(f.ttft_p50_ms),
             cell(f.ttft_p99_ms), cell(f.e2e_p99_ms))
            for f in stepped.steps
        ),
        f"Each level held {stepped.step_s:g} s. met SLO: the share of the step's requests "
        "that succeeded within the config's slo (requests.csv met_slo).",
    )  # fmt: skip
    capacity = Table(
        "Capacity at SLO",
        ("scenario", "mode", f"highest {unit} within the SLOs"),
        tuple(
            (scenario, mode, "none" if level is None else f"{level:g}")
            for scenario, level in sorted(stepped.capacity.items())
        ),
        f"The highest level at which at least {stepped.attainment:.0%} of a step's requests "
        "met the SLOs (slo.attainment).",
    )
    return Section("Steps", tables=(steps, capacity))


def _steps_data(stepped: Sweep | None) -> dict[str, Any] | None:
    if stepped is None:
        return None
    return {
        "unit": stepped.unit,
        "step_s": stepped.step_s,
        "attainment": stepped.attainment,
        "steps": [asdict(f) for f in stepped.steps],
        "capacity_at_slo": stepped.capacity,
    }


def _intro(run: Run) -> str:
    return (f"Run {run.name} ({run.record.mode}, engine {run.record.engine}), from {run.path}. "
            "Latencies in ms; throughput over the measurement window.")  # fmt: skip


def _locust_report(run: Run, out_dir: Path, with_charts: bool) -> Document:
    summary, latency = _locust_summary_rows(run), _locust_latency_rows(run)
    sections = [
        Section("Summary", tables=(_summary_table(summary),)),
        Section(
            "Latency percentiles",
            tables=(
                _latency_table(
                    latency,
                    "From Locust's stats (rounded response-time buckets: approximate); "
                    "E2E = Locust's LLM requests.",
                ),
            ),
        ),  # fmt: skip
        Section(
            "Not in Locust's files",
            (
                "Hits vs misses, the PD split, goodput and the server "
                "figures need a kvswarm run directory "
                "(requests.csv, run.json).",
            ),
        ),  # fmt: skip
    ]
    if with_charts:
        sections.append(Section("Charts", charts=tuple(_locust_charts(run, out_dir))))
    data = {"run": run.name, "mode": run.record.mode, "source": "locust csv",
            "summary": summary, "latency": latency}  # fmt: skip
    intro = (f"From Locust's --csv files at {run.path}_*.csv only: what they allow. "
             "Latencies in ms.")  # fmt: skip
    return Document("report", f"kvswarm report: {run.name}", (intro,), tuple(sections), data)
