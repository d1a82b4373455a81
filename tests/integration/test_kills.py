"""Kills and restarts (issue 14, item 3), with real processes.

SIGINT and SIGTERM of a standalone run, of a fleet's master and of `kvswarm demo` close
the run as `interrupted` with the signal named and every request recorded; SIGKILL of the
master loses only the records of its last moments and leaves a requests.csv whose every
line reads (a line cut by a kill mid-write is left out, and the summary says so); a worker
killed and restarted mid-run rejoins, and every row it shipped before and after is kept.

The target is the tests' own stream server (5 ms to the first token, 2 ms per token),
whose log of the request ids it served is the ground truth requests.csv is held to. Every
wait is bounded, and whatever a test started is killed at its end (`spawn`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from locust.runners import WORKER_REPORT_INTERVAL

from kvswarm.analysis.runs import TORN_LAST_LINE, load_run
from kvswarm.analysis.summary import format_summary, summarize
from kvswarm.records import CSV_COLUMNS
from tests.support.processes import (
    REPO,
    StreamServer,
    free_port,
    load_requests,
    run_dirs,
    start_stream_server,
)

LOCUSTFILE = str(REPO / "tests" / "support" / "locustfile_basic.py")
FLUSH_INTERVAL_S = 1.0
CONFIG = f"results: {{flush_interval_s: {FLUSH_INTERVAL_S}}}\n"
# Short prompts for the demo's cold-start scenario, so its requests come quickly.
DEMO_CONFIG = "scenarios:\n  cold_start: {unique_tokens: 200}\n"
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
# Scheduling slack on top of the delays a bound is made of (a busy CI machine).
SLACK_S = 2.0

T = TypeVar("T")
Spawn = Callable[..., subprocess.Popen]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StreamServer]:
    server = start_stream_server(tmp_path, ttft_ms=5, tpot_ms=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Starts a process (output to `<name>.log` in the test's directory); at the test's
    end kills each one still running, with every process it started."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], name: str, **popen: Any) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=tmp_path,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                # A test run started in the background of a shell without job control
                # inherits SIGINT ignored, and kvswarm (as Python) keeps an ignored SIGINT
                # ignored: the processes under test get the default, as from a terminal.
                preexec_fn=_sigint_default,
                **popen,
            )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            kill_tree(process)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process and its descendants, then reap it."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.kill()
    process.wait(timeout=30)


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args]


def wait_until(condition: Callable[[], T], what: str, timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def run_json(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())


def the_run(results: Path) -> Path | None:
    runs = run_dirs(results) if results.exists() else []
    return runs[0] if runs else None


def run_with_rows(results: Path, rows: int, workers: int = 1) -> Path:
    """The run under `results` once its requests.csv holds `rows` rows from `workers`
    workers (a partial last line, being written, does not count)."""

    def ready() -> Path | None:
        run = the_run(results)
        if run is None or not (run / "requests.csv").exists():
            return None
        written = [row for row in read_rows(run) if row.get("worker_id") and None not in row]
        enough = len(written) >= rows and len({r["worker_id"] for r in written}) >= workers
        return run if enough else None

    return wait_until(ready, f"{rows} rows from {workers} worker(s) in {results}")


def serving(server: StreamServer, requests: int, workers: int) -> bool:
    """Whether the server has had `requests` requests of the load from `workers` workers."""
    served = [entry["request_id"] for entry in load_requests(server.log())]
    senders = {request_id.rsplit("-", 2)[0] for request_id in served}
    return len(served) >= requests and len(senders) >= workers


def served_ids(server: StreamServer) -> list[str]:
    server.wait_idle()
    return sorted(entry["request_id"] for entry in load_requests(server.log()))


def row_ids(rows: list[dict[str, str]]) -> list[str]:
    return sorted(row["request_id"] for row in rows)


def log_of(directory: Path, name: str) -> str:
    return (directory / f"{name}.log").read_text(errors="replace")


def start_master(
    spawn: Spawn, server: StreamServer, config: Path, results: Path, port: int, run_time: str
) -> subprocess.Popen:
    return spawn(
        locust(
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--headless", "--expect-workers", "2", "-u", "4", "-r", "4", "-t", run_time,
            "--host", server.url, "--kv-config", str(config), "--kv-results", str(results),
        ),
        "master",
    )  # fmt: skip


def start_worker(spawn: Spawn, port: int, name: str) -> subprocess.Popen:
    return spawn(locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)), name)


# -- SIGINT and SIGTERM ----------------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_closes_a_standalone_run_as_interrupted_with_every_request_recorded(
    sig: signal.Signals, server: StreamServer, config: Path, spawn: Spawn, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    process = spawn(
        locust(
            "--headless", "-u", "4", "-r", "4", "-t", "60s", "--host", server.url,
            "--kv-config", str(config), "--kv-results", str(results),
        ),
        "locust",
    )  # fmt: skip
    run = run_with_rows(results, 20)
    process.send_signal(sig)
    process.wait(timeout=60)
    meta = run_json(run)
    assert meta["status"] == "interrupted", log_of(tmp_path, "locust")[-3000:]
    assert meta["status_reason"] == f"{sig.name} received before the test ended"
    rows = read_rows(run)
    assert meta["records"]["total"] == len(rows)
    # Every request sent has its row, the ones the signal cut short included.
    assert row_ids(rows) == served_ids(server)
    assert "Traceback" not in log_of(tmp_path, "locust")


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_to_the_master_closes_the_fleet_run_as_interrupted_with_every_request_recorded(
    sig: signal.Signals, server: StreamServer, config: Path, spawn: Spawn, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    port = free_port()
    master = start_master(spawn, server, config, results, port, "60s")
    workers = [start_worker(spawn, port, f"worker{n}") for n in (1, 2)]
    # Before the workers' first rows have come: the signal must bring all of them in.
    wait_until(lambda: serving(server, 20, workers=2), "requests from both workers")
    run = wait_until(lambda: the_run(results), "the run directory")
    master.send_signal(sig)
    master.wait(timeout=60)
    # The master told its workers to quit: none is left running.
    for worker in workers:
        worker.wait(timeout=30)
    meta = run_json(run)
    assert meta["status"] == "interrupted", log_of(tmp_path, "master")[-3000:]
    assert meta["status_reason"] == f"{sig.name} received before the test ended"
    assert meta["fleet"]["lost_workers"] == []
    rows = read_rows(run)
    assert meta["records"]["total"] == len(rows)
    assert len({row["worker_id"] for row in rows}) == 2
    assert row_ids(rows) == served_ids(server)
    for name in ("master", "worker1", "worker2"):
        assert "Traceback" not in log_of(tmp_path, name), name


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_to_the_demo_closes_its_run_as_interrupted_and_stops_its_processes(
    sig: signal.Signals, spawn: Spawn, tmp_path: Path
) -> None:
    """SIGINT as Ctrl-C sends it, to the demo's whole process group; SIGTERM as `kill`
    sends it, to the demo alone."""
    (tmp_path / "demo.yaml").write_text(DEMO_CONFIG)
    demo = spawn(
        [sys.executable, "-m", "kvswarm.cli", "demo", "--seconds", "60", "--users", "2",
         "--modes", "non_disaggregated", "--scenarios", "cold_start",
         "--config", str(tmp_path / "demo.yaml"), "--results", str(tmp_path / "results")],
        "demo",
        start_new_session=True,
    )  # fmt: skip
    mode_dir = wait_until(
        lambda: next((tmp_path / "results").glob("demo-*/non_disaggregated"), None),
        "the demo's directory",
    )
    run = run_with_rows(mode_dir, 2)
    children = psutil.Process(demo.pid).children(recursive=True)
    assert len(children) >= 2  # the simulated stack and the load test
    if sig == signal.SIGINT:
        os.killpg(demo.pid, sig)
    else:
        demo.send_signal(sig)
    assert demo.wait(timeout=90) == 128 + sig
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    output = log_of(tmp_path, "demo")
    assert f"{sig.name} received" in output and str(mode_dir.parent) in output
    meta = run_json(run)
    assert meta["status"] == "interrupted", output[-3000:]
    assert meta["status_reason"] == f"{sig.name} received before the test ended"
    assert meta["records"]["total"] == len(read_rows(run)) >= 2


# -- SIGKILL of the master --------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A master with 2 workers SIGKILLed mid-run (its workers killed after it): its run
    directory, what the server served, and when the master was killed (monotonic)."""
    directory = tmp_path_factory.mktemp("killed-master")
    server = start_stream_server(directory, ttft_ms=5, tpot_ms=2)
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    results = directory / "results"
    port = free_port()
    processes: list[subprocess.Popen] = []

    def spawn(command: list[str], name: str) -> subprocess.Popen:
        with open(directory / f"{name}.log", "wb") as log:
            processes.append(
                subprocess.Popen(command, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
            )
        return processes[-1]

    try:
        master = start_master(spawn, server, config, results, port, "60s")
        for n in (1, 2):
            start_worker(spawn, port, f"worker{n}")
        run = run_with_rows(results, 100, workers=2)
        master.kill()
        killed_at = time.monotonic()
        master.wait(timeout=30)
        for process in processes:
            kill_tree(process)
        yield {"run": run, "served": load_requests(server.log()), "killed_at": killed_at}
    finally:
        for process in processes:
            kill_tree(process)
        server.stop()


def test_sigkill_of_the_master_loses_only_the_requests_of_its_last_flush_and_report(
    killed_master: dict[str, Any],
) -> None:
    """A worker ships its rows at every stats report, the master writes them out at every
    flush: what a kill loses is what ended within those two intervals before it."""
    run = killed_master["run"]
    with open(run / "requests.csv", newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == list(CSV_COLUMNS)
    assert all(len(line) == len(CSV_COLUMNS) for line in lines[1:])
    rows = read_rows(run)
    ids = row_ids(rows)
    assert len(ids) == len(set(ids)) >= 100
    served = {entry["request_id"]: entry for entry in killed_master["served"]}
    assert set(ids) <= set(served)
    bound = killed_master["killed_at"] - (WORKER_REPORT_INTERVAL + FLUSH_INTERVAL_S + SLACK_S)
    lost = [
        rid
        for rid, entry in served.items()
        if rid not in set(ids) and entry.get("last_write", entry["received"]) < bound
    ]
    assert lost == []


def test_the_summary_of_a_run_whose_master_was_killed_says_it_was_not_closed(
    killed_master: dict[str, Any],
) -> None:
    loaded = load_run(killed_master["run"])
    assert loaded.record.status == "running"
    assert not loaded.requests.attrs[TORN_LAST_LINE]
    text = format_summary(summarize(loaded), str(loaded.path), loaded)
    assert "run not closed: run.json says it is still running" in text


def test_a_requests_csv_cut_mid_line_by_a_kill_reads_its_whole_rows_and_the_summary_says_so(
    killed_master: dict[str, Any], tmp_path: Path
) -> None:
    """A kill in the middle of a write leaves the last line cut short: made here by
    cutting the killed master's requests.csv halfway through its last row."""
    run = shutil.copytree(killed_master["run"], tmp_path / "run")
    text = (run / "requests.csv").read_bytes()
    last_row_start = text.rstrip(b"\n").rfind(b"\n") + 1
    cut = last_row_start + (len(text) - last_row_start) // 2
    (run / "requests.csv").write_bytes(text[:cut])
    whole_rows = text.count(b"\n") - 2  # less the header and the cut row
    loaded = load_run(run)
    assert len(loaded.requests) == whole_rows
    assert loaded.requests.attrs[TORN_LAST_LINE]
    summary = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "summary", str(run)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert "requests.csv ended in a cut-off line" in summary.stdout
    assert "Traceback" not in summary.stderr


# -- a worker killed and restarted --------------------------------------------------------


def test_a_worker_killed_and_restarted_mid_run_rejoins_and_every_row_it_shipped_is_kept(
    server: StreamServer, config: Path, spawn: Spawn, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    port = free_port()
    master = start_master(spawn, server, config, results, port, "10s")
    doomed = start_worker(spawn, port, "doomed")
    start_worker(spawn, port, "survivor")
    run = run_with_rows(results, 40, workers=2)
    doomed.kill()
    killed_at = time.monotonic()
    doomed.wait(timeout=30)
    start_worker(spawn, port, "restarted")
    assert master.wait(timeout=90) in (0, 1), log_of(tmp_path, "master")[-3000:]
    meta = run_json(run)
    rows = read_rows(run)
    by_worker: dict[str, set[str]] = {}
    for row in rows:
        by_worker.setdefault(row["worker_id"], set()).add(row["request_id"])
    assert meta["status"] == "finished"
    (lost,) = meta["fleet"]["lost_workers"]
    assert len(by_worker) == 3, sorted(by_worker)
    server.wait_idle()
    served = {e["request_id"]: e for e in load_requests(server.log())}
    for worker, ids in by_worker.items():
        sent = {rid for rid in served if rid.startswith(worker + "-")}
        if worker != lost:
            # The survivor and the restarted worker: one row per request sent.
            assert ids == sent, worker
            continue
        # The killed worker: every row it shipped kept; lost only what it had not shipped.
        assert ids <= sent
        assert len(ids) == meta["fleet"]["workers"][lost]["records"]
        bound = killed_at - (WORKER_REPORT_INTERVAL + SLACK_S)
        assert [r for r in sent - ids if served[r].get("last_write", 0) < bound] == []
    assert meta["records"]["total"] == len(rows)
