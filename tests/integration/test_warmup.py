"""Warm-up by seconds and by requests: the rows stay in requests.csv, flagged, and are in
no figure of the summary or the report."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.liveruns import read_rows
from tests.support.processes import REPO, run_dirs, run_locust, start_stream_server

WARMUP_REQUESTS = 12
CONFIGS = {
    "requests": f"results: {{warmup_requests: {WARMUP_REQUESTS}}}\n",
    "seconds": "results: {warmup_s: 1.0}\n",
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def warm_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp(f"warmup-{request.param}")
    server = start_stream_server(directory, ttft_ms=20, tpot_ms=5, tokens=8)
    config = directory / "config.yaml"
    config.write_text(CONFIGS[request.param])
    try:
        completed = run_locust(
            [
                "-f", str(REPO / "tests" / "support" / "locustfile_basic.py"), "--headless",
                "-u", "4", "-r", "4", "-t", "3s", "--host", server.url,
                "--kv-config", str(config), "--kv-results", str(directory / "results"),
            ],
            cwd=directory,
            timeout_s=120,
        )  # fmt: skip
    finally:
        server.stop()
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(directory / "results")
    rows = read_rows(run)
    return request.param, rows, json.loads((run / "run.json").read_text()), completed.stdout, run


def end_unix_s(row: dict[str, str]) -> float:
    """When the request ended (cancelled at the stop: last)."""
    return float(row["start_unix_s"]) + float(row["e2e_ms"] or "inf") / 1000


def test_the_first_requests_or_those_before_the_window_are_flagged(warm_run) -> None:
    kind, rows, meta, _, _ = warm_run
    flagged = [row for row in rows if row["warmup"] == "1"]
    if kind == "requests":
        assert len(flagged) == WARMUP_REQUESTS
        # The first to end: a user's requests end one after another, so its flagged ones
        # are its first (compared by order, not by a time tolerance a busy machine breaks).
        for user in {row["user_id"] for row in rows}:
            own = sorted((r for r in rows if r["user_id"] == user), key=end_unix_s)
            flags = [row["warmup"] for row in own]
            assert flags == sorted(flags, reverse=True), (user, flags)
    else:
        window = meta["window"]
        measure_start = window["start_unix_s"] + window["warmup_s"]
        assert flagged and all(
            (row["warmup"] == "1") == (float(row["start_unix_s"]) < measure_start) for row in rows
        )


def test_flagged_requests_are_in_no_summary_figure(warm_run) -> None:
    _, rows, _, stdout, _ = warm_run
    flagged = sum(row["warmup"] == "1" for row in rows)
    assert f"warm-up: {flagged} of {len(rows)} requests" in stdout
    counted, cancelled = re.search(r"basic: (\d+) requests.*?(\d+) cancelled", stdout).groups()
    assert int(counted) + int(cancelled) == len(rows) - flagged


def test_the_measured_window_starts_after_the_last_warm_up_request(warm_run) -> None:
    _, rows, meta, _, run = warm_run
    from kvswarm.analysis.runs import load_run

    loaded = load_run(run)
    window = meta["window"]
    last = max(float(row["start_unix_s"]) for row in rows if row["warmup"] == "1")
    start = max(last, window["start_unix_s"] + window["warmup_s"])
    assert loaded.window_s == pytest.approx(window["end_unix_s"] - start, abs=1e-3)
    assert len(loaded.measured) == sum(row["warmup"] == "0" for row in rows)
