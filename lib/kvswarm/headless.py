"""One scenario's headless Locust run in child processes, as `kvswarm demo` and
`kvswarm matrix` run them, and the comparison report they end with.

    run = HeadlessRun(mode, scenario, base_url, config, path=results / "run-id",
                      users=3, seconds=12.0)
    code = run_headless(run, "[1/4] non_disaggregated cold_start")
    write_comparison_report([run.path], results / "comparison")

Each run is `kvswarm locust --headless` limited to the scenario's user class, writing its
run directory (which kvswarm creates, and refuses to reuse) with Locust's own log and
CSVs beside it in `locust/`. With `workers` it is a master and that many local workers.
Locust's exit code 1 for "some requests failed" is turned off (`--exit-code-on-error 0`):
such a run measured, and says so in its files; a non-zero exit means the run itself
failed (kvswarm aborts with 2).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from kvswarm.childproc import free_port
from kvswarm.errors import KvswarmError
from kvswarm.interrupts import Interrupted, pass_on
from kvswarm.locust.naming import user_class_name
from kvswarm.urls import metrics_url

__all__ = [
    "RUN_OVERHEAD_S",
    "SPAWN_RATE",
    "HeadlessRun",
    "count_rows",
    "locustfile",
    "run_headless",
    "stack_metrics_endpoints",
    "write_comparison_report",
]

# Users started per second: staggered starts keep the users of one scenario from sending
# their first requests (all designed misses, or hits on a prefix still being prefilled) in
# lockstep.
SPAWN_RATE = 1.0
# Seconds one run or one stack start takes beyond its load time, for estimates.
RUN_OVERHEAD_S = 3.0
# Seconds workers get to leave after their master has ended before they are stopped.
WORKER_EXIT_S = 15.0


@dataclasses.dataclass(frozen=True)
class HeadlessRun:
    """One scenario's headless run in one mode: its target, load and run directory."""

    mode: str
    scenario: str
    base_url: str
    config: Path | None
    path: Path
    users: int
    seconds: float
    workers: int = 0
    reset_cache: bool = False

    @property
    def locust_dir(self) -> Path:
        """Where Locust's log and CSVs go: beside the run directory, which kvswarm creates
        itself."""
        return self.path.parent / "locust"

    @property
    def log_path(self) -> Path:
        return self.locust_dir / f"{self.path.name}.log"

    def worker_log_path(self, number: int) -> Path:
        return self.locust_dir / f"{self.path.name}.worker{number}.log"

    def command(self, master_port: int | None = None) -> list[str]:
        """The command line of the run (its master when `master_port` is given)."""
        fleet = (
            ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
             str(master_port), "--expect-workers", str(self.workers)]
            if master_port is not None else []
        )  # fmt: skip
        return [
            *_kvswarm_locust(self.config), *fleet, "--headless",
            "-u", str(self.users), "-r", str(SPAWN_RATE), "-t", f"{self.seconds:g}s",
            "--host", self.base_url, "--kv-mode", self.mode,
            "--kv-results", str(self.path.parent), "--kv-run-id", self.path.name,
            *(["--kv-reset-cache"] if self.reset_cache else []),
            "--csv", str(self.locust_dir / self.path.name), "--only-summary",
            "--exit-code-on-error", "0",
            user_class_name(self.scenario),
        ]  # fmt: skip

    def worker_command(self, master_port: int) -> list[str]:
        """The command line of one of the run's local workers."""
        return [
            *_kvswarm_locust(self.config),
            "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
        ]  # fmt: skip


def locustfile() -> str:
    """The path of the locustfile shipped in the package (found without importing Locust)."""
    spec = importlib.util.find_spec("kvswarm.locustfile")
    if spec is None or spec.origin is None:
        raise KvswarmError("kvswarm.locustfile is missing: reinstall kvswarm")
    return spec.origin


def _kvswarm_locust(config: Path | None) -> list[str]:
    """`kvswarm locust -f <locustfile> [--kv-config FILE]` in this interpreter."""
    chosen = ["--kv-config", str(config)] if config is not None else []
    return [sys.executable, "-m", "kvswarm.cli", "locust", "-f", locustfile(), *chosen]


def count_rows(csv_path: Path) -> int:
    """Data rows of a CSV file written so far (0 when there is none yet)."""
    try:
        with open(csv_path, "rb") as handle:
            return max(sum(1 for _ in handle) - 1, 0)
    except FileNotFoundError:
        return 0


def _progress(label: str, elapsed: float, total: float, requests: int, final: bool) -> None:
    line = f"  {label}: {min(elapsed, total):3.0f}/{total:.0f} s, {requests} requests"
    if sys.stdout.isatty():
        print("\r" + line, end="\n" if final else "", flush=True)
    elif final:
        print(line, flush=True)


def run_headless(run: HeadlessRun, label: str) -> int:
    """Run it, showing its progress under `label`; returns the (master's) exit code.

    Within `kvswarm.interrupts.interruptible()`, a SIGINT or SIGTERM is passed on to every
    process of the run, which closes its run as interrupted by it, before `Interrupted`
    goes on up."""
    run.locust_dir.mkdir(parents=True, exist_ok=True)
    port = free_port() if run.workers else None
    with open(run.log_path, "w", encoding="utf-8") as log:
        master = _start(run.command(port), log)
        workers = [_start_worker(run, port, n) for n in range(1, run.workers + 1)] if port else []
        try:
            _wait(master, run, label)
        except Interrupted as stop:
            for process in (master, *workers):
                pass_on(process, stop.signum)
            raise
        finally:
            _stop_all([master, *workers])
    return master.returncode


def _start(command: list[str], log: IO[str]) -> subprocess.Popen:
    # In a session of its own: a Ctrl-C reaches it through the command that started it
    # only, once.
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _start_worker(run: HeadlessRun, port: int, number: int) -> subprocess.Popen:
    with open(run.worker_log_path(number), "w", encoding="utf-8") as log:
        return _start(run.worker_command(port), log)


def _wait(master: subprocess.Popen, run: HeadlessRun, label: str) -> None:
    started = time.monotonic()
    while master.poll() is None:
        rows = count_rows(run.path / "requests.csv")
        _progress(label, time.monotonic() - started, run.seconds, rows, final=False)
        time.sleep(1.0)
    rows = count_rows(run.path / "requests.csv")
    _progress(label, time.monotonic() - started, run.seconds, rows, final=True)


def _stop_all(processes: Sequence[subprocess.Popen]) -> None:
    """Wait for each to leave (workers follow their master), stopping any that lingers."""
    deadline = time.monotonic() + WORKER_EXIT_S
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stack_metrics_endpoints(stack: Any) -> dict[str, str]:
    """A started target's metrics pages other than its entry point's own (which every run
    reads anyway), for a config's `metrics_endpoints`, so that none is scraped twice."""
    target_url = metrics_url(stack.base_url)
    pages = getattr(stack, "metrics_urls", {})
    return {name: url for name, url in pages.items() if url != target_url}


def write_comparison_report(runs: Sequence[Path], out_dir: Path) -> Path:
    """The comparison of the runs in these directories (PD vs non-PD, cache hits vs misses
    and cold start) written to `out_dir`; returns the Markdown report's path."""
    from kvswarm.analysis.cli import write_comparison

    files = write_comparison([(path, None) for path in runs], out_dir)
    return files[0]
