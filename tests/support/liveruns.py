"""Runs that outlive their test: `kvswarm locust` processes started with the web UI and
`--autostart` (no `--autoquit`), so after the run closes the process, and its exporter,
can still be read.

    process = kvswarm_locust([...args, "--autostart", "-t", "6s"], directory, log)
    try:
        run = wait_for_run_to_close(directory / "results", [log])
        samples = scrape(f"http://127.0.0.1:{exporter_port}/metrics")
    finally:
        stop(process)
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import run_dirs

__all__ = ["Samples", "kvswarm_locust", "read_rows", "scrape", "stop", "wait_for_run_to_close"]

# (sample name, its labels) -> value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def kvswarm_locust(args: list[str], directory: Path, log: Path) -> subprocess.Popen[bytes]:
    """`kvswarm locust ARGS` in `directory`, its output (unbuffered) to `log`."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "kvswarm.cli", "locust", *args],
            cwd=directory,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_run_to_close(results: Path, logs: list[Path], timeout_s: float = 120) -> Path:
    """The run's directory once its run.json says it is no longer running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = run_dirs(results) if results.exists() else []
        if runs and json.loads((runs[0] / "run.json").read_text())["status"] != "running":
            return runs[0]
        time.sleep(0.2)
    tails = "\n".join(f"== {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    raise AssertionError(f"the run did not close in {timeout_s}s\n{tails}")


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, parsed with prometheus-client's parser."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
