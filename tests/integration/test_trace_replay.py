"""Trace replay on the trace's own schedule, in a real Locust run and a real fleet: every
row of the selection is sent exactly once, at its scaled timestamp after a common start,
with its row index, scheduled time and lag in requests.csv."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.support.liveruns import read_rows
from tests.support.processes import (
    REPO,
    load_requests,
    run_dirs,
    run_fleet,
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


def check_replay_section(run: Path, rows: list[dict[str, str]]) -> dict:
    """run.json's replay section agrees with requests.csv; the summary prints it."""
    section = json.loads((run / "run.json").read_text())["replay"]["replay"]
    assert (section["rows_selected"], section["rows_sent"], section["rows_sent_twice"]) == (
        ROWS, ROWS, 0,
    )  # fmt: skip
    lags = np.array([float(row["send_lag_ms"]) for row in rows])
    assert section["lag_p50_ms"] == pytest.approx(np.percentile(lags, 50), abs=1e-3)
    assert section["lag_bound_ms"] == 50  # the default
    assert section["degraded"] == (np.percentile(lags, 99) > 50)
    # Prompts sized with the server's /tokenize are the trace's lengths.
    assert section["trace_input_tokens"] > 0
    assert abs(section["prompt_tokens_difference"]) <= 0.02
    assert f"trace replay replay: {ROWS} of {ROWS} rows sent" in (run / "summary.txt").read_text()


def run_replay(
    server, tmp_path: Path, config: Path, *, workers: int, seconds: int, users: int = 6
) -> Path:
    """`locust ... ReplayUser` with `users` users, standalone or a master with `workers`
    workers; the run directory."""
    common = ["-f", str(REPO / "locustfiles"), "--kv-config", str(config)]
    args = ["ReplayUser", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
            "--host", server.url, "--kv-results", str(tmp_path / "results")]  # fmt: skip
    if workers:
        completed = run_fleet(common, args, tmp_path, workers)
    else:
        completed = run_locust([*common, "--headless", *args], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    return run


def test_a_standalone_replay_sends_every_row_once_on_the_traces_schedule(
    server, tmp_path: Path
) -> None:
    config, offsets = write_config(tmp_path)
    served_before = len(load_requests(server.log()))
    run = run_replay(server, tmp_path, config, workers=0, seconds=8)
    rows = read_rows(run)
    check_replay(rows, offsets)
    check_replay_section(run, rows)
    server.wait_idle()
    assert len(load_requests(server.log())) - served_before == ROWS


def test_a_fleet_replay_deals_every_row_to_one_worker(server, tmp_path: Path) -> None:
    config, offsets = write_config(tmp_path)
    run = run_replay(server, tmp_path, config, workers=2, seconds=8)
    rows = read_rows(run)
    check_replay(rows, offsets)
    check_replay_section(run, rows)
    assert len({row["worker_id"] for row in rows}) == 2
    # Each worker measured its clock against the master's; on one host the clocks are one,
    # so the estimate is within half its round trip of 0.
    loads = json.loads((run / "run.json").read_text())["load_generator"]
    workers = [load for load in loads.values() if load["role"] == "worker"]
    assert len(workers) == 2
    for load in workers:
        assert load["clock_rtt_ms"] > 0
        assert abs(load["clock_offset_ms"]) <= load["clock_rtt_ms"] / 2 + 0.01


# The committed excerpt of Mooncake's conversation trace (200 rows over 72 s, prompts of
# 14k tokens on average, up to 121k): its first 60 s, replayed at a quarter of the time.
EXCERPT = REPO / "tests" / "data" / "mooncake_conversation_200.jsonl"
SLICE_S = 60
SCALE = 0.25


@pytest.mark.parametrize("workers", [0, 2], ids=["standalone", "fleet"])
def test_a_slice_of_the_mooncake_conversation_trace_replays_on_its_schedule(
    server, tmp_path: Path, workers: int
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "target: {max_model_len: 200000}\n"
        "generation: {max_tokens: 4}\n"
        "scenarios:\n"
        f"  replay: {{type: trace, path: {EXCERPT}, end_s: {SLICE_S * SCALE}, "
        f"time_scale: {SCALE}}}\n"
    )
    stamps = [json.loads(line)["timestamp"] for line in EXCERPT.read_text().splitlines()]
    selected = [i for i, stamp in enumerate(stamps) if stamp * SCALE < SLICE_S * SCALE * 1000]
    # Its rows come in bursts of up to 16 at one timestamp: a user each, so none waits.
    run = run_replay(
        server, tmp_path, config, workers=workers, seconds=int(SLICE_S * SCALE) + 6, users=32
    )
    rows = read_rows(run)
    assert sorted(int(row["trace_row"]) for row in rows) == selected  # each once, none lost
    if workers:
        assert len({row["worker_id"] for row in rows}) == workers
    by_row = {int(row["trace_row"]): row for row in rows}
    scheduled = np.array([float(by_row[i]["scheduled_unix_s"]) for i in selected])
    trace_s = np.array([stamps[i] * SCALE / 1000 for i in selected])
    assert np.allclose(scheduled - scheduled[0], trace_s - trace_s[0], atol=0.002)
    # The server received the rows at the trace's times: the gaps between receipts follow
    # the trace's gaps (the median deviation a small share of the mean gap).
    server.wait_idle()
    received = {entry["request_id"]: entry["received"] for entry in server.log()}
    arrivals = np.array([received[by_row[i]["request_id"]] for i in selected])
    deviation = np.abs(np.diff(arrivals) - np.diff(trace_s))
    assert np.median(deviation) < np.mean(np.diff(trace_s)) * 0.1
    section = json.loads((run / "run.json").read_text())["replay"]["replay"]
    assert (section["rows_sent"], section["rows_sent_twice"]) == (len(selected), 0)
    assert abs(section["prompt_tokens_difference"]) <= 0.02
