"""Open-loop arrivals in a real Locust run against a slow server: requests go on the
schedule, not when earlier ones end, so the server's slowness does not slow the load."""

from __future__ import annotations

import json
import math

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

RATE = 40.0  # requests per second
# TTFT 1 s and 32 tokens at 10 ms: each request takes about 1.3 s, so a closed loop of
# 60 users could send at most about 45/s, and would slow down further with the server.
TTFT_MS = 1000


@pytest.fixture(scope="module")
def open_loop_run(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("open-loop")
    server = start_stream_server(directory, ttft_ms=TTFT_MS, tpot_ms=10, tokens=32)
    try:
        completed = run_locust(
            [
                "-f", str(REPO / "tests" / "support" / "locustfile_basic.py"), "--headless",
                "-u", "80", "-r", "80", "-t", "8s", "--stop-timeout", "10",
                "--host", server.url, "--kv-results", str(directory / "results"),
                "--kv-arrival", "poisson", "--kv-rate", str(RATE),
            ],
            cwd=directory,
            timeout_s=120,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        server.wait_idle()
        (run,) = run_dirs(directory / "results")
        yield read_rows(run), json.loads((run / "run.json").read_text()), server.log(), run
    finally:
        server.stop()


def steady(rows: list[dict[str, str]]) -> list[float]:
    """Scheduled times of the rows, leaving out the first second (users spawning)."""
    times = sorted(float(row["scheduled_unix_s"]) for row in rows)
    return [t for t in times if t >= times[0] + 1.0]


def test_every_request_carries_its_scheduled_time_and_lag(open_loop_run) -> None:
    rows, meta, _, _ = open_loop_run
    assert meta["options"]["arrival"] == {
        "kind": "poisson", "rate_per_s": RATE, "burstiness": 1.0, "ramp_s": 0.0
    }  # fmt: skip
    assert rows and all(row["scheduled_unix_s"] and row["send_lag_ms"] for row in rows)
    for row in rows:
        lag_s = float(row["start_unix_s"]) - float(row["scheduled_unix_s"])
        assert lag_s == pytest.approx(float(row["send_lag_ms"]) / 1000, abs=0.005)


def test_the_achieved_rate_is_the_target_while_the_server_is_slow(open_loop_run) -> None:
    rows, _, served, _ = open_loop_run
    assert len(load_requests(served)) == len(rows)
    times = steady(rows)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    # A Poisson count over ~6 s at 40/s has a spread of about 6%: three of them allowed.
    assert achieved == pytest.approx(RATE, rel=3 * math.sqrt(RATE * 6) / (RATE * 6))
    ttfts = [float(row["ttft_ms"]) for row in rows if row["ok"] == "1"]
    assert np.median(ttfts) >= TTFT_MS  # the server was slow all along


def fits_exponential(times: np.ndarray, rate: float) -> bool:
    """Kolmogorov-Smirnov at 5%: the gaps between `times` against Exp(rate)."""
    ordered = np.sort(np.diff(np.sort(times)))
    n = len(ordered)
    model = 1 - np.exp(-rate * ordered)
    distance = max((np.arange(1, n + 1) / n - model).max(), (model - np.arange(n) / n).max())
    return distance < 1.358 / math.sqrt(n)


def test_inter_arrival_times_fit_the_exponential_distribution(open_loop_run) -> None:
    rows, _, _, run = open_loop_run
    starts = np.sort([float(row["start_unix_s"]) for row in rows])
    assert fits_exponential(starts[starts >= starts[0] + 1.0], RATE)


def test_a_fleet_sends_the_rate_on_schedule_while_the_server_is_slow(tmp_path) -> None:
    """Master + 2 workers, each sending half the rate on its own generator: together a
    Poisson stream at the target rate, not slowed by a 1-s TTFT."""
    server = start_stream_server(tmp_path, ttft_ms=TTFT_MS, tpot_ms=10, tokens=32)
    try:
        completed = run_fleet(
            ["-f", str(REPO / "tests" / "support" / "locustfile_basic.py")],
            [
                "-u", "80", "-r", "80", "-t", "8s", "--stop-timeout", "10",
                "--host", server.url, "--kv-results", str(tmp_path / "results"),
                "--kv-arrival", "poisson", "--kv-rate", str(RATE),
            ],
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    rows = read_rows(run)
    assert len({row["worker_id"] for row in rows}) == 2
    times = np.array(steady(rows))
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved == pytest.approx(RATE, rel=3 * math.sqrt(RATE * 6) / (RATE * 6))
    assert fits_exponential(times, RATE)


def test_the_summary_reports_the_send_lag(open_loop_run) -> None:
    rows, _, _, run = open_loop_run
    summary = (run / "summary.txt").read_text()
    assert "open loop: send lag p50" in summary
    lags = [float(row["send_lag_ms"]) for row in rows]
    ttfts = [float(row["ttft_ms"]) for row in rows if row["ok"] == "1"]
    # The users kept up with the schedule: a closed loop would wait a whole request (TTFT
    # and more) between sends; an open loop's typical lag is a small part of one.
    assert np.median(lags) < np.median(ttfts) / 10


def test_the_summary_gives_latencies_from_the_schedule_too(open_loop_run) -> None:
    rows, _, _, run = open_loop_run
    summary = (run / "summary.txt").read_text()
    line = next(line for line in summary.splitlines() if line.strip().startswith("TTFT*"))
    p50 = float(line.split()[1])
    ok = [row for row in rows if row["ok"] == "1"]
    from_schedule = [float(row["ttft_ms"]) + float(row["send_lag_ms"]) for row in ok]
    assert p50 == pytest.approx(np.percentile(from_schedule, 50), abs=0.01)
    assert "from the scheduled send time" in summary
