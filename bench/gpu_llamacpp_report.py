"""Tables for bench/README.md from bench_gpu_llamacpp.py's run folders (issue 18).

    .venv/bin/python bench/gpu_llamacpp_report.py RUNS_DIR [RUNS_DIR ...]

Per run (a scenario at N slots, host-RAM prompt cache on or off), from requests.csv and
run.json:

- gap = client TTFT − the engine's own `timings.prompt_ms` (requests.csv `ttft_ms −
  server_prefill_ms`), p50/p90/p99/max, and how many requests waited over 1 s beyond
  their own prompt time (the stall);
- cached share of prompt tokens (sum `cached_tokens` / sum `prompt_tokens`) against the
  design's (sum `prefix_tokens` of the requests that expected a hit / sum `prompt_tokens`),
  and the share of those requests that hit (cached ≥ half their prefix);
- median TTFT of hits and of misses;
- output tokens (requests.csv, from `usage.completion_tokens`) and text chunks against the
  server's `llamacpp:tokens_predicted_total` over the window, and `cached_tokens` against
  `llamacpp:prompt_tokens_cached_total`.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STALL_MS = 1000.0


@dataclass(frozen=True)
class RunTable:
    name: str
    scenario: str
    slots: int
    cache_ram: bool
    requests: int
    failed: int
    gap_ms: np.ndarray
    prompt_ms: np.ndarray
    ttft_ms: np.ndarray
    hit: np.ndarray  # cached >= half the prompt
    designed_share: float
    cached_share: float
    expected_hits: int
    expected_hits_hit: int
    output_tokens: int
    text_chunks: int
    prompt_tokens: int
    cached_tokens: int
    counter_predicted: float | None
    counter_cached: float | None
    counter_computed: float | None
    window_s: float


def load_run(folder: Path) -> RunTable:
    bench = json.loads((folder / "bench.json").read_text())
    (run_dir,) = [p.parent for p in (folder / "kvswarm").glob("*/run.json")]
    meta = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ok = [r for r in rows if r["ok"] == "1"]
    timed = [r for r in ok if r["server_prefill_ms"]]
    ttft = np.array([float(r["ttft_ms"]) for r in timed])
    prompt = np.array([float(r["server_prefill_ms"]) for r in timed])
    prompt_tokens = np.array([int(r["prompt_tokens"] or 0) for r in timed])
    cached = np.array([int(r["cached_tokens"] or 0) for r in timed])
    expected = [r for r in ok if r["expected_hit"] == "1"]
    hit_expected = [
        r for r in expected if int(r["cached_tokens"] or 0) >= 0.5 * int(r["prefix_tokens"])
    ]
    all_prompt = sum(int(r["prompt_tokens"] or 0) for r in ok)
    deltas = meta["server"]["sources"].get("target", {}).get("deltas", {})
    window = meta.get("window") or {}
    return RunTable(
        name=bench["run"],
        scenario=bench["scenario"],
        slots=bench["slots"],
        cache_ram=bench["cache_ram"],
        requests=len(rows),
        failed=len(rows) - len(ok),
        gap_ms=ttft - prompt,
        prompt_ms=prompt,
        ttft_ms=ttft,
        hit=cached >= 0.5 * np.maximum(prompt_tokens, 1),
        designed_share=sum(int(r["prefix_tokens"]) for r in expected) / max(all_prompt, 1),
        cached_share=sum(int(r["cached_tokens"] or 0) for r in ok) / max(all_prompt, 1),
        expected_hits=len(expected),
        expected_hits_hit=len(hit_expected),
        output_tokens=sum(int(r["output_tokens"]) for r in rows),
        text_chunks=sum(int(r["text_chunks"]) for r in rows),
        prompt_tokens=all_prompt,
        cached_tokens=sum(int(r["cached_tokens"] or 0) for r in rows),
        counter_predicted=deltas.get("llamacpp:tokens_predicted_total"),
        counter_cached=deltas.get("llamacpp:prompt_tokens_cached_total"),
        counter_computed=deltas.get("llamacpp:prompt_tokens_total"),
        window_s=window.get("end_unix_s", 0) - window.get("start_unix_s", 0) or bench["seconds"],
    )


def pct(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if len(values) else "—"


def median(values: np.ndarray) -> str:
    return f"{np.median(values):.0f}" if len(values) else "—"


def ram(table: RunTable) -> str:
    return "default" if table.cache_ram else "0"


def gap_table(tables: list[RunTable]) -> list[str]:
    lines = [
        "| scenario | slots | --cache-ram | requests | prompt_ms p50 | TTFT p50 | gap p50 | "
        "gap p90 | gap p99 | gap max | gap > 1 s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in tables:
        stalls = int((t.gap_ms > STALL_MS).sum())
        lines.append(
            f"| {t.scenario} | {t.slots} | {ram(t)} | {t.requests - t.failed}"
            f"{f' ({t.failed} failed)' if t.failed else ''} | {median(t.prompt_ms)} | "
            f"{median(t.ttft_ms)} | {median(t.gap_ms)} | {pct(t.gap_ms, 90)} | "
            f"{pct(t.gap_ms, 99)} | {pct(t.gap_ms, 100)} | {stalls} |"
        )
    return lines


def cache_table(tables: list[RunTable]) -> list[str]:
    lines = [
        "| scenario | slots | --cache-ram | designed share | cached share |"
        " expected hits that hit | TTFT p50 hit | TTFT p50 miss |"
        " prompt_ms p50 hit | prompt_ms p50 miss |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in tables:
        hits = (
            f"{t.expected_hits_hit}/{t.expected_hits}" if t.expected_hits else "— (none expected)"
        )
        lines.append(
            f"| {t.scenario} | {t.slots} | {ram(t)} | {t.designed_share:.1%} | "
            f"{t.cached_share:.1%} | {hits} | {median(t.ttft_ms[t.hit])} | "
            f"{median(t.ttft_ms[~t.hit])} | {median(t.prompt_ms[t.hit])} | "
            f"{median(t.prompt_ms[~t.hit])} |"
        )
    return lines


def counter_table(tables: list[RunTable]) -> list[str]:
    lines = [
        "| scenario | slots | --cache-ram | output tokens | text chunks | tokens_predicted_total |"
        " cached_tokens | prompt_tokens_cached_total | output tok/s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in tables:
        predicted = f"{t.counter_predicted:.0f}" if t.counter_predicted is not None else "—"
        cached = f"{t.counter_cached:.0f}" if t.counter_cached is not None else "—"
        lines.append(
            f"| {t.scenario} | {t.slots} | {ram(t)} | {t.output_tokens} | {t.text_chunks} | "
            f"{predicted} | {t.cached_tokens} | {cached} | "
            f"{t.output_tokens / max(t.window_s, 1e-9):.0f} |"
        )
    return lines


def repeats_table(rounds: list[list[RunTable]]) -> list[str]:
    """Each configuration's key figures in every round (`a / b / c`): how far they move."""
    by_config: dict[tuple[str, int, bool], list[RunTable]] = {}
    for tables in rounds:
        for t in tables:
            by_config.setdefault((t.scenario, t.slots, t.cache_ram), []).append(t)
    lines = [
        "| scenario | slots | --cache-ram | gap p50 (ms) | gap p99 (ms) | gap > 1 s |"
        " cached share (designed) | output tokens − tokens_predicted_total |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t0 in _ordered([ts[0] for ts in by_config.values()]):
        ts = by_config[(t0.scenario, t0.slots, t0.cache_ram)]

        def each(cell: Any, ts: list[RunTable] = ts) -> str:
            return " / ".join(cell(t) for t in ts)

        lines.append(
            f"| {t0.scenario} | {t0.slots} | {ram(t0)} | {each(lambda t: median(t.gap_ms))} | "
            f"{each(lambda t: pct(t.gap_ms, 99))} | {each(_stalls)} | "
            f"{each(_cached)} ({each(_designed)}) | {each(_predicted_difference)} |"
        )
    return lines


def _stalls(t: RunTable) -> str:
    return str(int((t.gap_ms > STALL_MS).sum()))


def _cached(t: RunTable) -> str:
    return f"{t.cached_share:.1%}"


def _designed(t: RunTable) -> str:
    return f"{t.designed_share:.1%}"


def _predicted_difference(t: RunTable) -> str:
    if t.counter_predicted is None:
        return "—"
    return f"{t.output_tokens - t.counter_predicted:+.0f}"


def _ordered(tables: list[RunTable]) -> list[RunTable]:
    order = {"long_context_high_reuse": 0, "code_generation": 1, "multi_turn_conversation": 2}
    order |= {"batch_processing": 3, "cold_start": 4}
    return sorted(tables, key=lambda t: (-t.slots, order.get(t.scenario, 9), not t.cache_ram))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="folders holding run folders")
    parser.add_argument(
        "--rounds", action="store_true",
        help="each folder is one round of the same runs: one table of every round's figures",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rounds:
        rounds = [[load_run(p.parent) for p in root.glob("*/bench.json")] for root in args.runs]
        print("\n".join(repeats_table(rounds)))
        return
    folders = [p.parent for root in args.runs for p in root.glob("*/bench.json")]
    tables = _ordered([load_run(folder) for folder in folders])
    for title, lines in (
        ("Client TTFT against the engine's prompt_ms (ms)", gap_table(tables)),
        ("Cache hits against the design", cache_table(tables)),
        ("Tokens against the server's counters", counter_table(tables)),
    ):
        print(f"\n{title}\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
