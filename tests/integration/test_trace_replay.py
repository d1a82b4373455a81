"""Trace replay on the trace's own schedule, in a real Locust run and a real fleet: every
row of the selection is sent exactly once, at its scaled timestamp after a common start,
with its row index, scheduled time and lag in requests.csv."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.liveruns import read_rows
from tests.support.processes import (
    REPO,
    free_port,
    load_requests,
    run_dirs,
    run_locust,
    start_stream_server,
)

ROWS = 40
GAP_MS = 100  # mean gap between rows in the file; replayed at time_scale 1
BLOCK = 64


def write_trace(path: Path) -> list[float]:
    """A small Mooncake-format trace (conversations sharing their first blocks); its rows'
    offsets in seconds."""
    rng = random.Random(5)
    stamp, offsets, lines = 0, [], []
    for row in range(ROWS):
        blocks = rng.randint(2, 5)
        shared = [row % 4] + [100 + row * 10 + b for b in range(blocks - 1)]
        length = (blocks - 1) * BLOCK + rng.randint(1, BLOCK)
        lines.append(json.dumps({"timestamp": stamp, "input_length": length,
                                 "output_length": 4, "hash_ids": shared}))  # fmt: skip
        offsets.append(stamp / 1000)
        stamp += rng.randint(GAP_MS // 2, GAP_MS * 3 // 2)
    path.write_text("\n".join(lines) + "\n")
    return offsets


def write_config(directory: Path) -> tuple[Path, list[float]]:
    offsets = write_trace(directory / "trace.jsonl")
    config = directory / "config.yaml"
    config.write_text(
        "generation: {max_tokens: 4}\n"
        "scenarios:\n"
        f"  replay: {{type: trace, path: {directory / 'trace.jsonl'}, block_tokens: {BLOCK}}}\n"
    )
    return config, offsets


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("replay-server")
    stream = start_stream_server(directory, ttft_ms=20, tpot_ms=2, tokens=4)
    yield stream
    stream.stop()


def check_replay(rows: list[dict[str, str]], offsets: list[float]) -> None:
    assert sorted(int(row["trace_row"]) for row in rows) == list(range(ROWS))
    by_row = {int(row["trace_row"]): row for row in rows}
    scheduled = np.array([float(by_row[r]["scheduled_unix_s"]) for r in range(ROWS)])
    # The schedule is the trace's own timeline, from one common start.
    assert np.allclose(scheduled - scheduled[0], np.array(offsets) - offsets[0], atol=0.002)
    lags = np.array([float(row["send_lag_ms"]) for row in rows])
    # The users kept up with the trace: rows typically went well within the gap to the next.
    assert np.median(lags) < np.median(np.diff(offsets)) * 1000 / 2


def test_a_standalone_replay_sends_every_row_once_on_the_traces_schedule(
    server, tmp_path: Path
) -> None:
    config, offsets = write_config(tmp_path)
    served_before = len(load_requests(server.log()))
    completed = run_locust(
        [
            "-f", str(REPO / "locustfiles"), "ReplayUser", "--headless", "-u", "6", "-r", "6",
            "-t", "8s", "--host", server.url, "--kv-config", str(config),
            "--kv-results", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
        timeout_s=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    rows = read_rows(run)
    check_replay(rows, offsets)
    server.wait_idle()
    assert len(load_requests(server.log())) - served_before == ROWS


def test_a_fleet_replay_deals_every_row_to_one_worker(server, tmp_path: Path) -> None:
    config, offsets = write_config(tmp_path)
    port = free_port()
    common = ["-f", str(REPO / "locustfiles"), "--kv-config", str(config)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                *common,
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        completed = run_locust(
            [
                *common, "ReplayUser", "--headless", "--master", "--master-bind-host",
                "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "2",
                "-u", "6", "-r", "6", "-t", "8s", "--host", server.url,
                "--kv-results", str(tmp_path / "results"),
            ],
            cwd=tmp_path,
            timeout_s=120,
        )  # fmt: skip
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    rows = read_rows(run)
    check_replay(rows, offsets)
    assert len({row["worker_id"] for row in rows}) == 2
