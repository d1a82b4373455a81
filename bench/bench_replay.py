"""The largest trace-replay rate one Locust process keeps with send lag p99 <= 20 ms.

    .venv/bin/python bench/bench_replay.py --rates 50 100 200 400

Per rate: a synthetic Mooncake-format trace of Poisson arrivals at that rate for
`--seconds` (each row 2 blocks of 512 tokens: the first shared by one of 16
conversations, the second its own; `--output-tokens` to generate), replayed by one
`locust --headless ... ReplayUser` process (`-u` enough that no row waits for a user)
against the tests' streaming server (TTFT 20 ms, TPOT 5 ms). Reported from run.json's
`replay` and `load_generator`: the rows sent, the send lag p50/p99, whether it was kept
within 20 ms, the process's CPU share and event-loop lag p99, and the streamed tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.processes import run_dirs, start_stream_server  # noqa: E402

BLOCK = 512
CONVERSATIONS = 16
KEPT_MS = 20.0
TTFT_MS = 20.0
TPOT_MS = 5.0


def write_trace(path: Path, rate: float, seconds: float, output_tokens: int, seed: int) -> int:
    """Poisson arrivals at `rate` for `seconds`; the number of rows."""
    rng = random.Random(seed)
    stamp, rows, lines = 0.0, 0, []
    while True:
        stamp += rng.expovariate(rate)
        if stamp >= seconds:
            break
        conversation = rng.randrange(CONVERSATIONS)
        ids = [conversation, CONVERSATIONS + rows]
        lines.append(json.dumps({"timestamp": int(stamp * 1000), "input_length": 2 * BLOCK,
                                 "output_length": output_tokens, "hash_ids": ids}))  # fmt: skip
        rows += 1
    path.write_text("\n".join(lines) + "\n")
    return rows


def run_rate(rate: float, args: argparse.Namespace, base: Path) -> dict:
    directory = base / f"rate-{rate:g}"
    directory.mkdir()
    rows = write_trace(directory / "trace.jsonl", rate, args.seconds, args.output_tokens, 7)
    (directory / "config.yaml").write_text(
        f"target: {{max_model_len: 8192}}\n"
        f"generation: {{max_tokens: {args.output_tokens}}}\n"
        f"scenarios:\n"
        f"  replay: {{type: trace, path: {directory / 'trace.jsonl'}, lag_bound_ms: {KEPT_MS}}}\n"
    )
    stream_s = (TTFT_MS + TPOT_MS * args.output_tokens) / 1000
    users = int(rate * stream_s * 3) + 20
    server = start_stream_server(
        directory, ttft_ms=TTFT_MS, tpot_ms=TPOT_MS, tokens=args.output_tokens
    )
    try:
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles"), "ReplayUser",
             "--headless", "-u", str(users), "-r", str(users), "-t", f"{args.seconds + 6:g}s",
             "--host", server.url, "--kv-config", str(directory / "config.yaml"),
             "--kv-results", str(directory / "results"), "--only-summary"],
            cwd=directory, env={**os.environ, "KVSWARM_EXPORTER_PORT": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.seconds + 120,
        )  # fmt: skip
    finally:
        server.stop()
    (run,) = run_dirs(directory / "results")
    record = json.loads((run / "run.json").read_text())
    replay = record["replay"]["replay"]
    (load,) = record["load_generator"].values()
    return {"rate": rate, "rows": rows, "users": users, **replay, "cpu_share": load["cpu_share"],
            "loop_lag_p99_ms": load["loop_lag_p99_ms"],
            "tokens_per_s": replay["rows_sent"] * args.output_tokens / args.seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seconds", type=float, default=15.0, help="trace length per rate")
    parser.add_argument("--output-tokens", type=int, default=32)
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} cores; server TTFT {TTFT_MS:g} ms, TPOT {TPOT_MS:g} ms; rows of "
        f"{2 * BLOCK} prompt tokens, {args.output_tokens} output tokens; {args.seconds:g} s "
        f"per rate; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print("| rows/s asked | rows sent | of | users | lag p50 ms | lag p99 ms | within 20 ms "
          "| streamed tokens/s | CPU (share of a core) | loop lag p99 ms |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    base = Path(tempfile.mkdtemp(prefix="kvswarm-bench-replay-"))
    try:
        for rate in args.rates:
            r = run_rate(rate, args, base)
            print(
                f"| {r['rate']:g} | {r['rows_sent']} | {r['rows']} | {r['users']} "
                f"| {r['lag_p50_ms']:.2f} | {r['lag_p99_ms']:.2f} "
                f"| {'yes' if r['lag_p99_ms'] <= KEPT_MS else 'no'} | {r['tokens_per_s']:,.0f} "
                f"| {r['cpu_share']:.2f} | {r['loop_lag_p99_ms']:.2f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
