"""Fleet throughput: streamed tokens/s a Locust fleet consumes with its timing still right.

For each fleet size N (N `locust --worker` processes next to one `locust --master`, all on
this machine) and each load (users per worker), runs a headless kvswarm run against the
tests' streaming server (tests/support/streamserver.py, one SSE event per token, a fresh
process per step, unpinned) and reports, over the measurement window (from the end of
the warm-up to just before the run stops):

- tokens/s and requests/s consumed: output tokens and count of the successful requests
  that ended in the window, from the master's requests.csv;
- TTFT error p50/p99 of the requests that started in the window: the client's TTFT
  minus the server's own (first-token write - request receipt, same monotonic clock),
  joined with the server's log on request_id;
- cores used in the window by the workers, the master, the server, and everything else
  on the machine (from /proc), and the 1-minute load average at the window's end.

Each step is also compared with N x the one-worker step at the same users per worker
(every N runs at one load before the next load, so noise on the shared machine hits
them alike). A step "holds" when no request failed and the TTFT error stays within the
bounds (`--err-p50-ms`, `--err-p99-ms`); N's figure is its best holding step, compared
with N x the one-worker figure.

    .venv/bin/python bench/bench_fleet.py --workers 1 2 4 --users-per-worker 25 50 100 150 200 300
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.processes import StreamServer, run_dirs, start_stream_server  # noqa: E402

# The bench's locustfile: tests/support/locustfile_basic.py with a chosen output length.
LOCUSTFILE = """\
from locust import task

from kvswarm.locust.users import LLMUser


class FleetBenchUser(LLMUser):
    scenario = "fleet"

    @task
    def ask(self) -> None:
        self.send(messages=[{{"role": "user", "content": "Say something."}}], max_tokens={tokens})
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The window ends this long before the run stops, so no request in it is cut short.
STOP_MARGIN_S = 1.0


@dataclass(frozen=True)
class Step:
    workers: int
    users_per_worker: int

    @property
    def users(self) -> int:
        return self.workers * self.users_per_worker


@dataclass(frozen=True)
class Window:
    """The measurement window: wall-clock bounds and CPU seconds spent inside it."""

    start_unix_s: float
    end_unix_s: float
    worker_cpu_s: float
    master_cpu_s: float
    server_cpu_s: float
    machine_cpu_s: float
    load_1min: float

    @property
    def length_s(self) -> float:
        return self.end_unix_s - self.start_unix_s

    def cores(self, cpu_s: float) -> float:
        return cpu_s / self.length_s


@dataclass(frozen=True)
class Outcome:
    step: Step
    requests: int
    failed: int
    tokens_per_s: float
    requests_per_s: float
    err_p50_ms: float
    err_p99_ms: float
    window: Window

    @property
    def fleet_us_per_token(self) -> float:
        """CPU the workers and the master spent per token consumed, in µs."""
        cpu_s = self.window.worker_cpu_s + self.window.master_cpu_s
        return cpu_s / (self.tokens_per_s * self.window.length_s) * 1e6

    def holds(self, p50_bound_ms: float, p99_bound_ms: float) -> bool:
        return (
            self.failed == 0 and self.err_p50_ms <= p50_bound_ms and self.err_p99_ms <= p99_bound_ms
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def process_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_sample(master: int, workers: list[int], server: int) -> tuple[float, ...]:
    return (
        sum(process_cpu_s(pid) for pid in workers),
        process_cpu_s(master),
        process_cpu_s(server),
        machine_busy_s(),
    )


def locust(locustfile: Path, args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(locustfile), *args],
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for_run_start(results: Path, master: subprocess.Popen, timeout_s: float) -> None:
    """Until the master opens the run directory (its test_start, all workers connected)."""
    deadline = time.monotonic() + timeout_s
    while not (results.exists() and run_dirs(results)):
        if master.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the run did not start; see {results.parent}/master.log")
        time.sleep(0.05)


def run_step(
    step: Step, server: StreamServer, workdir: Path, locustfile: Path, args: argparse.Namespace
) -> tuple[Path, Window]:
    """One headless run of the fleet; its run directory and measurement window."""
    results = workdir / "results"
    port = free_port()
    master = locust(
        locustfile,
        [
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--headless", "--expect-workers", str(step.workers), "-u", str(step.users),
            "-r", str(step.users), "-t", f"{args.seconds:g}s", "--host", server.url,
            "--kv-results", str(results), "--only-summary",
        ],
        workdir,
        workdir / "master.log",
    )  # fmt: skip
    workers = [
        locust(
            locustfile,
            ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
            workdir,
            workdir / f"worker{index}.log",
        )
        for index in range(step.workers)
    ]
    fleet = [master, *workers]
    try:
        wait_for_run_start(results, master, timeout_s=120)
        started = time.time()
        time.sleep(args.warmup)
        before = cpu_sample(master.pid, [w.pid for w in workers], server.process.pid)
        start_unix_s = time.time()
        time.sleep(args.seconds - STOP_MARGIN_S - (start_unix_s - started))
        after = cpu_sample(master.pid, [w.pid for w in workers], server.process.pid)
        end_unix_s = time.time()
        for process in fleet:
            process.wait(timeout=120)
    finally:
        for process in fleet:
            if process.poll() is None:
                process.kill()
                process.wait()
    if master.returncode != 0:
        tail = (workdir / "master.log").read_text()[-2000:]
        raise RuntimeError(f"master exited {master.returncode}:\n{tail}")
    spent = [b - a for a, b in zip(before, after, strict=True)]
    window = Window(start_unix_s, end_unix_s, *spent, load_1min=os.getloadavg()[0])
    (run,) = run_dirs(results)
    return run, window


def measure(step: Step, run: Path, server: StreamServer, window: Window) -> Outcome:
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = {entry["request_id"]: entry for entry in server.log()}
    ok = [row for row in rows if row["ok"] == "1"]

    def inside(t: float) -> bool:
        return window.start_unix_s <= t < window.end_unix_s

    ending = [
        row for row in ok if inside(float(row["start_unix_s"]) + float(row["e2e_ms"]) / 1000.0)
    ]
    errors = []
    for row in ok:
        if inside(float(row["start_unix_s"])):
            served = truth[row["request_id"]]
            server_ttft_ms = (served["first_write"] - served["received"]) * 1000.0
            errors.append(float(row["ttft_ms"]) - server_ttft_ms)
    return Outcome(
        step=step,
        requests=len(rows),
        failed=sum(1 for row in rows if row["ok"] != "1" and row["failure"] != "cancelled"),
        tokens_per_s=sum(int(row["output_tokens"]) for row in ending) / window.length_s,
        requests_per_s=len(ending) / window.length_s,
        err_p50_ms=statistics.median(errors),
        err_p99_ms=percentile(errors, 0.99),
        window=window,
    )


def run_all(args: argparse.Namespace, base: Path) -> list[Outcome]:
    locustfile = base / "locustfile_fleet.py"
    locustfile.write_text(LOCUSTFILE.format(tokens=args.tokens))
    outcomes = []
    single: dict[int, Outcome] = {}
    # Every fleet size at one load before the next load, so a noisy spell on the shared
    # machine hits the sizes being compared alike.
    for users in args.users_per_worker:
        for workers in args.workers:
            step = Step(workers, users)
            workdir = base / f"n{workers}-u{users}"
            workdir.mkdir()
            server = start_stream_server(workdir, ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms)
            try:
                run, window = run_step(step, server, workdir, locustfile, args)
                server.wait_idle()
            finally:
                server.stop()
            outcome = measure(step, run, server, window)
            outcomes.append(outcome)
            if workers == 1:
                single[users] = outcome
            print_row(outcome, args, single.get(users))
    return outcomes


HEADER = (
    "| N | users/worker | requests | failed | tokens/s | requests/s | TTFT err p50 ms "
    "| TTFT err p99 ms | fleet µs CPU/token | cores: workers | master | server | others "
    "| load | holds | ratio to N x 1 worker |"
)


def print_row(outcome: Outcome, args: argparse.Namespace, single: Outcome | None) -> None:
    """One step; its ratio to N x the one-worker figure at the same users per worker."""
    o, w = outcome, outcome.window
    others = max(0.0, w.machine_cpu_s - w.worker_cpu_s - w.master_cpu_s - w.server_cpu_s)
    holds = "yes" if o.holds(args.err_p50_ms, args.err_p99_ms) else "no"
    ratio = f"{o.tokens_per_s / (o.step.workers * single.tokens_per_s):.2f}" if single else "-"
    print(
        f"| {o.step.workers} | {o.step.users_per_worker} | {o.requests} | {o.failed} "
        f"| {o.tokens_per_s:.0f} | {o.requests_per_s:.1f} | {o.err_p50_ms:.2f} "
        f"| {o.err_p99_ms:.2f} | {o.fleet_us_per_token:.1f} | {w.cores(w.worker_cpu_s):.2f} "
        f"| {w.cores(w.master_cpu_s):.2f} "
        f"| {w.cores(w.server_cpu_s):.2f} | {w.cores(others):.2f} | {w.load_1min:.2f} "
        f"| {holds} | {ratio} |",
        flush=True,
    )


def best_per_fleet(outcomes: list[Outcome], args: argparse.Namespace) -> dict[int, Outcome]:
    best: dict[int, Outcome] = {}
    for o in outcomes:
        if not o.holds(args.err_p50_ms, args.err_p99_ms):
            continue
        if o.step.workers not in best or o.tokens_per_s > best[o.step.workers].tokens_per_s:
            best[o.step.workers] = o
    return best


def print_scaling(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    best = best_per_fleet(outcomes, args)
    print(
        f"\nBest step per N holding TTFT err p50 <= {args.err_p50_ms:g} ms and "
        f"p99 <= {args.err_p99_ms:g} ms with no failures:\n"
    )
    print(
        "| N | users/worker | tokens/s | requests/s | TTFT err p50 ms | TTFT err p99 ms "
        "| fleet µs CPU/token | ratio to N x single |"
    )
    print("| ---: " * 8 + "|")
    single = best.get(1)
    for n in args.workers:
        o = best.get(n)
        if o is None:
            print(f"| {n} | - | - | - | - | - | - | no step held |")
            continue
        ratio = f"{o.tokens_per_s / (n * single.tokens_per_s):.2f}" if single else "-"
        print(
            f"| {n} | {o.step.users_per_worker} | {o.tokens_per_s:.0f} "
            f"| {o.requests_per_s:.1f} | {o.err_p50_ms:.2f} | {o.err_p99_ms:.2f} "
            f"| {o.fleet_us_per_token:.1f} | {ratio} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--users-per-worker", type=int, nargs="+", default=[25, 50, 100, 150, 200, 300]
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="run time of each step")
    parser.add_argument("--warmup", type=float, default=3.0, help="excluded from the window")
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="server TTFT")
    parser.add_argument("--tpot-ms", type=float, default=5.0, help="server TPOT")
    parser.add_argument("--err-p50-ms", type=float, default=2.0, help="TTFT error bound")
    parser.add_argument("--err-p99-ms", type=float, default=10.0, help="TTFT error bound")
    parser.add_argument(
        "--keep", action="store_true", help="keep the runs' files (results, logs) in /tmp"
    )
    args = parser.parse_args()
    if args.seconds - args.warmup - STOP_MARGIN_S < 2:
        parser.error("--seconds must leave at least 2 s after --warmup and the stop margin")

    print(
        f"{os.cpu_count()} cores; server TTFT {args.ttft_ms:g} ms, TPOT {args.tpot_ms:g} ms, "
        f"{args.tokens} tokens/request; {args.seconds:g} s per step, {args.warmup:g} s "
        f"warm-up; load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print(HEADER)
    print("| ---: " * 14 + "| --- | ---: |")
    base = Path(tempfile.mkdtemp(prefix="kvswarm-bench-fleet-"))
    try:
        outcomes = run_all(args, base)
    finally:
        if args.keep:
            print(f"\nruns kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_scaling(outcomes, args)


if __name__ == "__main__":
    main()
