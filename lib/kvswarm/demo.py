"""`kvswarm demo`: every scenario against the simulated stack, in both deployment modes.

For each mode it starts the simulated stack (`kvswarm sim`) in a child process, runs all
five scenario classes together with `locust --headless` for `--seconds`, shows progress,
and stops the stack; then it prints the headline numbers of both runs. Everything lands
in `results/demo-<time>/`: one run directory per mode, Locust's logs and CSVs, and the
demo's config. The numbers come from a simulator: they show how kvswarm measures, not how
fast any real serving stack is.

With `--engine llamacpp` the target is instead a real llama.cpp `llama-server` with a
tiny generated model (`kvswarm engine llamacpp`; built once, about 5 minutes), in the
non-disaggregated mode only, with prompts scaled to its 4096-token slots.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kvswarm import locustfile
from kvswarm.errors import KvswarmError

MODES = ("non_disaggregated", "pd_disaggregated")

# Scenario lengths scaled down from the original suite so a laptop-sized demo sees many
# requests per scenario in under a minute; the shapes (reuse ratios, pools) are the same.
DEMO_SCENARIOS: dict[str, dict[str, Any]] = {
    "long_context_high_reuse": {"shared_tokens_min": 4000, "shared_tokens_max": 8000},
    "code_generation": {"shared_tokens_min": 2000, "shared_tokens_max": 2000},
    "multi_turn_conversation": {
        "shared_tokens_min": 500,
        "shared_tokens_max": 1000,
        "max_history_tokens": 4000,
    },
    "batch_processing": {"shared_tokens_min": 1000, "shared_tokens_max": 2000},
    "cold_start": {"unique_tokens": 2000},
}
# For the tiny llama.cpp model: 4096-token slots, and small pools, since llama.cpp caches
# per slot (each slot must see a prefix once before it can hit).
LLAMACPP_SLOTS = 4
LLAMACPP_SCENARIOS: dict[str, dict[str, Any]] = {
    "long_context_high_reuse": {
        "pool_size": 2,
        "shared_tokens_min": 1000,
        "shared_tokens_max": 2000,
    },
    "code_generation": {"pool_size": 1, "shared_tokens_min": 1500, "shared_tokens_max": 1500},
    "multi_turn_conversation": {
        "pool_size": 2,
        "shared_tokens_min": 300,
        "shared_tokens_max": 600,
        "max_history_tokens": 3000,
    },
    "batch_processing": {"pool_size": 2, "shared_tokens_min": 600, "shared_tokens_max": 1000},
    "cold_start": {"unique_tokens": 1000},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run every scenario against the simulated stack in both modes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=45.0, help="load time per mode (default: 45)"
    )
    parser.add_argument(
        "--users", type=int, default=10, help="simulated users per mode (default: 10)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="deployment modes to run (default: both)",
    )
    parser.add_argument(
        "--results", default="results", help="where the demo's directory goes (default: results)"
    )
    parser.add_argument(
        "--engine",
        choices=("sim", "llamacpp"),
        default="sim",
        help="sim: the simulated stack, both modes (default); llamacpp: a real llama-server "
        "with a tiny model, non_disaggregated only",
    )
    parser.set_defaults(func=run_demo)


def _write_config(path: Path, metrics_endpoints: dict[str, str], engine: str) -> None:
    config: dict[str, Any] = {
        "generation": {"max_tokens": 64},
        "scenarios": DEMO_SCENARIOS,
        "metrics_endpoints": metrics_endpoints,
    }
    if engine == "llamacpp":
        from kvswarm.llamacpp.server import DEFAULT_ALIAS

        config["target"] = {"model": DEFAULT_ALIAS, "engine": "llama.cpp", "max_model_len": 4096}
        config["generation"] = {"max_tokens": 16}
        config["scenarios"] = LLAMACPP_SCENARIOS
    path.write_text(
        "# Written by `kvswarm demo`: the scenarios scaled down for the simulated stack.\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )


def _count_rows(csv_path: Path) -> int:
    try:
        with open(csv_path, "rb") as handle:
            return max(sum(1 for _ in handle) - 1, 0)
    except FileNotFoundError:
        return 0


def _progress(label: str, elapsed: float, total: float, requests: int, final: bool) -> None:
    line = f"  {label}: {min(elapsed, total):4.0f}/{total:.0f} s, {requests} requests"
    if sys.stdout.isatty():
        print("\r" + line, end="\n" if final else "", flush=True)
    elif final or int(elapsed) % 10 == 0:
        print(line, flush=True)


def _start_target(mode: str, engine: str, mode_dir: Path) -> Any:
    """The server under test, as a context manager with `base_url` and `metrics_urls`."""
    if engine == "llamacpp":
        from kvswarm.llamacpp.build import ensure_llama_server
        from kvswarm.llamacpp.server import LlamaServerOptions, start_llama_server

        build = ensure_llama_server()
        options = LlamaServerOptions(slots=LLAMACPP_SLOTS, ctx_per_slot=4096, threads=1)
        return start_llama_server(options, binary=build.binary, log_path=mode_dir / "server.log")
    from kvswarm.sim.options import SimOptions
    from kvswarm.sim.stack import spawn_stack

    return spawn_stack(SimOptions(mode=mode).with_free_ports(), log_path=mode_dir / "sim.log")


def _run_mode(mode: str, index: int, args: argparse.Namespace, root: Path) -> Path:
    label = f"[{index}/{len(args.modes)}] {mode}"
    target = "llama-server" if args.engine == "llamacpp" else "the simulated stack"
    print(f"{label}: starting {target}", flush=True)
    mode_dir = root / mode
    mode_dir.mkdir(parents=True, exist_ok=True)
    with _start_target(mode, args.engine, mode_dir) as stack:
        config = mode_dir / "config.yaml"
        metrics_urls = getattr(stack, "metrics_urls", {})
        extra = {k: v for k, v in metrics_urls.items() if k != "target"}
        _write_config(config, extra, args.engine)
        print(f"{label}: {stack.base_url}, {args.users} users for {args.seconds:g} s", flush=True)
        command = [
            sys.executable, "-m", "locust", "-f", locustfile.__file__, "--headless",
            "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds:g}s",
            "--host", stack.base_url, "--kv-mode", mode, "--kv-config", str(config),
            "--kv-results", str(root), "--kv-run-id", f"run-{mode}",
            "--csv", str(mode_dir / "locust"), "--only-summary",
        ]  # fmt: skip
        with open(mode_dir / "locust.log", "w", encoding="utf-8") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            started = time.monotonic()
            csv_path = root / f"run-{mode}" / "requests.csv"
            while process.poll() is None:
                _progress(label, time.monotonic() - started, args.seconds, _count_rows(csv_path),
                          final=False)  # fmt: skip
                time.sleep(1.0)
            _progress(label, time.monotonic() - started, args.seconds, _count_rows(csv_path),
                      final=True)  # fmt: skip
        if process.returncode not in (0, 1):
            raise KvswarmError(
                f"the {mode} load test failed (exit {process.returncode}); "
                f"see {mode_dir / 'locust.log'}"
            )
    return root / f"run-{mode}"


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}"


def format_headlines(runs: dict[str, Path], engine: str = "sim") -> str:
    from kvswarm.analysis.headline import headlines
    from kvswarm.analysis.runs import load_run

    if engine == "llamacpp":
        intro = [
            "kvswarm demo — a real llama-server (llama.cpp) with a tiny random-weight model on",
            "this machine's CPU: real prefill, decode and prompt cache, not a production model.",
        ]
    else:
        intro = [
            "kvswarm demo — simulated stack: these numbers show how kvswarm measures,",
            "not the performance of any real serving stack.",
        ]
    lines = [
        *intro,
        "",
        f"{'mode':<18} {'scenario':<24} {'reqs':>5} {'TTFT p50 hit':>12} "
        f"{'TTFT p50 miss':>13} {'drop':>5} {'TPOT p50':>8} {'req/s':>6} {'tok/s':>7} "
        f"{'cached':>6}",
    ]
    for mode, path in runs.items():
        for h in headlines(load_run(path)):
            hit, miss = _cell(h.ttft_p50_hit_ms, ".1f"), _cell(h.ttft_p50_miss_ms, ".1f")
            lines.append(
                f"{mode:<18} {h.name:<24} {h.requests:>5} {hit:>9} ms {miss:>10} ms "
                f"{_pct(h.ttft_drop):>4}% {_cell(h.tpot_p50_ms, '.2f'):>5} ms "
                f"{_cell(h.requests_per_s, '.1f'):>6} {_cell(h.output_tokens_per_s, '.0f'):>7} "
                f"{_pct(h.cached_share):>5}%"
            )
    lines.append("")
    lines.append("hit/miss: requests the design expected to hit the prefix cache, and the rest;")
    lines.append("cached: server-reported cached prompt tokens / prompt tokens.")
    return "\n".join(lines) + "\n"


def run_demo(args: argparse.Namespace) -> int:
    if args.engine == "llamacpp":
        if args.modes != ["non_disaggregated"] and args.modes != list(MODES):
            raise KvswarmError("--engine llamacpp runs the non_disaggregated mode only")
        args.modes = ["non_disaggregated"]
        args.users = min(args.users, LLAMACPP_SLOTS)
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
    root = Path(args.results).resolve() / f"demo-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    print(f"kvswarm demo: {len(args.modes)} mode(s) x {args.seconds:g} s, results in {root}")
    runs = {mode: _run_mode(mode, i, args, root) for i, mode in enumerate(args.modes, 1)}
    text = format_headlines(runs, args.engine)
    (root / "headline.txt").write_text(text, encoding="utf-8")
    print()
    print(text, end="")
    for mode, path in runs.items():
        print(f"{mode}: {path} (summary.txt, requests.csv, run.json)")
    print(f"results: {root}")
    return 0
