"""The highest open-loop rate one Locust process holds (issue 15): send lag by step.

    .venv/bin/python bench/bench_open_loop.py --rates 50 100 200 400 --step-s 10

One `locust --headless` process (kvswarm's fixed-prompt locustfile, `--kv-arrival
poisson --kv-steps <rates>`, `-u` users as the in-flight cap) against the tests'
streaming server (TTFT 50 ms, TPOT 10 ms, 16 tokens), each on its own core when
`--pinned`. Per step: requests scheduled, the achieved rate, and the send lag (start -
scheduled start) p50/p99/max: a process that cannot keep up sends late, and its lag
grows. The highest rate whose lag p99 stays under 20 ms is what one worker holds.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.processes import run_dirs, start_stream_server  # noqa: E402

LAG_TARGET_MS = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=400, help="the in-flight cap (-u)")
    parser.add_argument("--pinned", action="store_true", help="server core 0, Locust core 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        server = start_stream_server(
            base, ttft_ms=50, tpot_ms=10, tokens=16, core=0 if args.pinned else None
        )
        try:
            rows = run(args, server.url, base)
        finally:
            server.stop()
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.step_s:g} s per step, -u {args.users}")
    print("| rate asked /s | scheduled | achieved /s | lag p50 ms | lag p99 ms | lag max ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for step, rate in enumerate(args.rates):
        sent = [r for r in rows if r["step"] == str(step)]
        lags = np.array([float(r["send_lag_ms"]) for r in sent if r["send_lag_ms"]])
        if not len(lags):
            continue
        p50, p99 = np.percentile(lags, [50, 99])
        held = "" if p99 <= LAG_TARGET_MS else " (over 20 ms)"
        print(
            f"| {rate:g} | {len(sent)} | {len(sent) / args.step_s:.1f} | {p50:.2f} | "
            f"{p99:.2f}{held} | {lags.max():.1f} |"
        )


def run(args: argparse.Namespace, url: str, base: Path) -> list[dict[str, str]]:
    command = [
        sys.executable, "-m", "locust", "-f", str(REPO / "tests/support/locustfile_basic.py"),
        "--headless", "-u", str(args.users), "--host", url, "--kv-results", str(base / "r"),
        "--kv-arrival", "poisson", "--kv-steps", ",".join(f"{r:g}" for r in args.rates),
        "--kv-step-s", f"{args.step_s:g}", "--only-summary",
    ]  # fmt: skip
    if args.pinned:
        command = ["taskset", "-c", "1", *command]
    env = {**os.environ, "KVSWARM_EXPORTER_PORT": "0"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=base)
    if completed.returncode != 0:
        raise SystemExit(completed.stderr[-3000:])
    (run_dir,) = run_dirs(base / "r")
    with open(run_dir / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


if __name__ == "__main__":
    main()
