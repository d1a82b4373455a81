"""`--kv-steps`: the load held at each level in turn, every request labelled with its
step, and the capacity at SLO found where the simulator's cost model puts the knee.

The simulator serves two sequences at a time (`--max-num-seqs 2`), each request taking
~5 ms of prefill and 8 tokens at 10 ms: one or two closed-loop users never queue (TTFT
a few ms), six always keep four waiting (TTFT from one to two service times, ~85-170
ms). With a 60 ms TTFT SLO the knee is between 2 and 6 users.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.liveruns import read_rows
from tests.support.processes import (
    REPO,
    run_dirs,
    run_fleet,
    run_locust,
    running_sim,
    start_stream_server,
)

LEVELS = (1, 2, 6)
STEP_S = 3.0
CONFIG = """\
generation: {max_tokens: 8}
slo: {ttft_ms: 60, tpot_ms: 1000, attainment: 0.9}
"""


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cost = [
        "--max-num-seqs", "2", "--prefill-base-ms", "5", "--prefill-ms-per-token", "0",
        "--decode-base-ms", "10", "--decode-ms-per-seq", "0",
    ]  # fmt: skip
    with running_sim(tmp_path_factory.mktemp("steps-sim"), *cost) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def stepped_run(simulator: str, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("steps")
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    completed = run_locust(
        [
            "-f", str(REPO / "tests" / "support" / "locustfile_basic.py"), "--headless",
            "--host", simulator, "--kv-config", str(config),
            "--kv-results", str(directory / "results"),
            "--kv-steps", ",".join(map(str, LEVELS)), "--kv-step-s", str(STEP_S),
        ],
        cwd=directory,
        timeout_s=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(directory / "results")
    return read_rows(run), json.loads((run / "run.json").read_text()), completed.stdout, run


def test_the_plan_and_its_start_are_in_run_json(stepped_run) -> None:
    _, meta, _, _ = stepped_run
    steps = meta["options"]["steps"]
    assert steps["levels"] == list(LEVELS) and steps["step_s"] == STEP_S
    assert steps["unit"] == "users" and steps["start_unix_s"] > 1.7e9


def test_every_request_is_labelled_with_the_step_it_started_in(stepped_run) -> None:
    rows, meta, _, _ = stepped_run
    origin = meta["options"]["steps"]["start_unix_s"]
    assert {row["step"] for row in rows} >= {"0", "1", "2"}
    for row in rows:
        step = max(0, int((float(row["start_unix_s"]) - origin) // STEP_S))
        # Past the plan's end (the test stops within a second of it): in no step.
        assert row["step"] == (str(step) if step < len(LEVELS) else ""), row


def test_the_test_ends_when_the_plan_does(stepped_run) -> None:
    rows, meta, _, _ = stepped_run
    # No -t was given: the plan's end stopped the test, and it ran every step.
    assert meta["status"] == "finished"
    origin = meta["options"]["steps"]["start_unix_s"]
    assert meta["window"]["end_unix_s"] >= origin + (len(LEVELS) - 1) * STEP_S


def test_each_request_says_whether_it_met_the_slo(stepped_run) -> None:
    rows, _, _, _ = stepped_run
    for row in rows:
        met = row["ok"] == "1" and float(row["ttft_ms"]) <= 60 and float(row["tpot_ms"]) <= 1000
        assert row["met_slo"] == ("1" if met else "0"), row


def test_the_capacity_at_slo_is_the_last_level_before_queueing(stepped_run) -> None:
    _, _, stdout, run = stepped_run
    from kvswarm.analysis.runs import load_run
    from kvswarm.analysis.steps import sweep

    result = sweep(load_run(run))
    assert result is not None
    shares = {f.level: f.met_slo_share for f in result.steps}
    assert shares[1] >= 0.9 and shares[2] >= 0.9 and shares[6] < 0.9, shares
    assert result.capacity == {"basic": 2.0}
    assert "capacity at SLO, basic: 2 users" in stdout


def test_the_report_gives_the_steps_and_the_capacity_per_scenario_and_mode(
    stepped_run, tmp_path
) -> None:
    _, _, _, run = stepped_run
    completed = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "report", str(run), "-o", str(tmp_path),
         "--format", "md", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    markdown = (tmp_path / "report.md").read_text()
    assert "## Steps" in markdown and "Capacity at SLO" in markdown
    assert "| basic | non_disaggregated | 2 |" in markdown
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["steps"]["capacity_at_slo"] == {"basic": 2.0}
    assert [step["level"] for step in data["steps"]["steps"]] == [1.0, 2.0, 6.0]


RATES = (10.0, 40.0)


def test_a_fleet_steps_its_open_loop_rate_on_the_masters_timeline(tmp_path) -> None:
    """Master + 2 workers, open loop at 10/s then 40/s: each worker sends its half of
    each step, and every request is labelled by its scheduled time on the timeline the
    master shipped."""
    server = start_stream_server(tmp_path, ttft_ms=20, tpot_ms=5, tokens=8)
    try:
        completed = run_fleet(
            ["-f", str(REPO / "tests" / "support" / "locustfile_basic.py")],
            [
                "-u", "20", "--host", server.url, "--kv-results", str(tmp_path / "results"),
                "--kv-arrival", "poisson", "--kv-steps", ",".join(map(str, RATES)),
                "--kv-step-s", str(STEP_S),
            ],
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    rows = read_rows(run)
    steps = json.loads((run / "run.json").read_text())["options"]["steps"]
    assert steps["unit"] == "requests_per_s" and steps["levels"] == list(RATES)
    origin = steps["start_unix_s"]
    for row in rows:
        elapsed = float(row["scheduled_unix_s"]) - origin
        assert int(row["step"]) == max(0, int(elapsed // STEP_S)), row  # none after the end
    counts = [sum(row["step"] == str(step) for row in rows) for step in range(len(RATES))]
    assert counts[1] > 2 * counts[0], counts  # 4x the rate, on the same timeline
    for step, rate in enumerate(RATES):
        sent = [row for row in rows if row["step"] == str(step)]
        # Poisson counts: 30 and 120 expected (the first step also holds the second of
        # arrivals before the plan's start); four standard deviations allowed.
        expected = rate * STEP_S
        assert abs(len(sent) - expected) <= 4 * expected**0.5 + rate, (step, len(sent))
        assert {row["worker_id"] for row in sent} == {row["worker_id"] for row in rows} and len(
            {row["worker_id"] for row in rows}
        ) == 2


def test_the_config_load_section_runs_a_step_plan_without_options(simulator, tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "load: {steps: [1, 2], step_s: 2}\n")
    completed = run_locust(
        [
            "-f", str(REPO / "tests" / "support" / "locustfile_basic.py"), "--headless",
            "--host", simulator, "--kv-config", str(config),
            "--kv-results", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
        timeout_s=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    steps = json.loads((run / "run.json").read_text())["options"]["steps"]
    assert steps["levels"] == [1.0, 2.0] and steps["step_s"] == 2.0
    assert {"0", "1"} <= {row["step"] for row in read_rows(run)}
