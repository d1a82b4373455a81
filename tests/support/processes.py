"""Starting and stopping the real processes integration tests run against."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# a TCP port free on loopback now, for a process the test starts next (re-exported)
from kvswarm.childproc import free_port as free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class StreamServer:
    """tests/support/streamserver.py running in its own process."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return json.loads(response.read())

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until no request is in flight (abandoned streams notice on their next write)."""
        deadline = time.monotonic() + timeout_s
        while self.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pinned_to(core: int | None):
    """A Popen `preexec_fn` that pins the child to one CPU core (None: no pinning, and
    no pinning either on a machine with fewer than two cores).

    Timing tests give the ground-truth server and the load generator a core each, as the
    benchmarks do: otherwise the OS now and then runs both on one core for a few ms, and
    the comparison measures that scheduling rather than the client."""
    cores = sorted(os.sched_getaffinity(0))
    if core is None or len(cores) < 2:
        return None
    chosen = {cores[core % len(cores)]}
    return lambda: os.sched_setaffinity(0, chosen)


def start_stream_server(
    directory: Path,
    ttft_ms: float = 50,
    tpot_ms: float = 10,
    core: int | None = None,
    tokens: int = 0,
    lean: bool = False,
) -> StreamServer:
    """`lean`: the server's `--lean` (benchmarks)."""
    log_path = directory / "server-log.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.streamserver",
            "--port",
            "0",
            "--ttft-ms",
            str(ttft_ms),
            "--tpot-ms",
            str(tpot_ms),
            "--log",
            str(log_path),
            "--tokens",
            str(tokens),
            *(["--lean"] if lean else []),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pinned_to(core),
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"stream server did not start: {line!r}")
    return StreamServer(process=process, port=int(line.split()[1]), log_path=log_path)


def run_locust(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
    core: int | None = None,
) -> subprocess.CompletedProcess:
    """`locust ...` in a fresh process; returns it with stdout and stderr captured."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "locust", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=pinned_to(core),
    )


def start_locust(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    core: int | None = None,
) -> subprocess.Popen:
    """`locust ...` started in the background (a master or a worker), its output (stdout
    and stderr together) readable as text from `stdout`."""
    return subprocess.Popen(
        [sys.executable, "-m", "locust", *args],
        cwd=cwd,
        env={**os.environ, **env} if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=pinned_to(core),
    )


def run_fleet(
    locustfile: list[str], master_args: list[str], cwd: Path, workers: int = 2
) -> subprocess.CompletedProcess:
    """A headless master (`master_args`) with `workers` local workers, all loading
    `locustfile` (the `-f ...` arguments), on a free port; returns the master's run."""
    port = free_port()
    started = [
        start_locust(
            [*locustfile, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
            cwd=cwd,
        )
        for _ in range(workers)
    ]
    try:
        return run_locust(
            [
                *locustfile, "--headless", "--master", "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "--expect-workers", str(workers),
                *master_args,
            ],
            cwd=cwd,
            timeout_s=120,
        )  # fmt: skip
    finally:
        for worker in started:
            worker.terminate()
            worker.communicate(timeout=30)


@contextmanager
def running_sim(directory: Path, *args: str) -> Iterator[str]:
    """`kvswarm sim` on free ports with `args` (cost model, mode, ...); yields its base
    URL once it is ready, and stops it after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kvswarm.cli", "sim", "--port", "0", "--print-json", *args],
        cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("{"), process.stderr.read() if process.stderr else ""
        yield json.loads(line)["base_url"]
    finally:
        process.terminate()
        process.communicate(timeout=30)


def run_dirs(results: Path) -> list[Path]:
    return sorted(path for path in results.iterdir() if (path / "run.json").exists())


def run_scenario(
    base_url: str,
    config_text: str,
    directory: Path,
    scenario: str,
    users: int,
    seconds: int,
    *extra: str,
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """One scenario of `config_text` headless against `base_url` (users started at once,
    60 s for in-flight requests to end, `extra` options); its requests.csv rows and
    run.json."""
    import csv

    from kvswarm.locust.naming import user_class_name

    config = directory / "config.yaml"
    config.write_text(config_text)
    results = directory / f"results-{scenario}-{users}"
    completed = run_locust(
        [
            "-f", str(REPO / "locustfiles"), user_class_name(scenario), "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "60",
            "--host", base_url, "--kv-config", str(config), "--kv-results", str(results),
            *extra,
        ],
        cwd=directory,
        timeout_s=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(results)
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((run / "run.json").read_text())


def load_requests(served: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A server log's entries without kvswarm's pre-flight request: the requests of the
    load, which requests.csv holds one row each."""
    from kvswarm.preflight import PREFLIGHT_REQUEST_ID

    return [entry for entry in served if entry.get("request_id") != PREFLIGHT_REQUEST_ID]
