"""`kvswarm matrix --sim`, shortened: every enabled scenario in every enabled mode against
the simulated stack, one comparison across them, resuming, retrying and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvswarm.cli import main

pytestmark = pytest.mark.slow

# Two small scenarios; the built-in ones off.
TWO_SCENARIOS = """
generation: {max_tokens: 8}
scenarios:
  long_context_high_reuse: {enabled: false}
  code_generation: {enabled: false}
  multi_turn_conversation: {enabled: false}
  batch_processing: {shared_tokens_min: 500, shared_tokens_max: 800, unique_tokens: 32}
  cold_start: {unique_tokens: 300}
"""
# One scenario whose prompts cannot fit the context: its run stops before any load, with
# exit 2, every time.
TOO_LONG = """
generation: {max_tokens: 8}
deployment_modes:
  pd_disaggregated: {enabled: false}
scenarios:
  long_context_high_reuse: {enabled: false}
  code_generation: {enabled: false}
  multi_turn_conversation: {enabled: false}
  batch_processing: {enabled: false}
  cold_start: {enabled: false}
  too_long: {type: cold_start, unique_tokens: 40000}
"""
# The PD mode off; one small scenario.
ONE_RUN = """
generation: {max_tokens: 8}
deployment_modes:
  pd_disaggregated: {enabled: false}
scenarios:
  long_context_high_reuse: {enabled: false}
  code_generation: {enabled: false}
  multi_turn_conversation: {enabled: false}
  batch_processing: {enabled: false}
  cold_start: {unique_tokens: 300}
"""
SHORT = ["--sim", "--seconds", "2", "--users", "1", "--cool-down", "0"]
BOTH_MODES = ("non_disaggregated", "pd_disaggregated")


def matrix(where: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    path = where / "config.yaml"
    path.write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "matrix", "--config", str(path),
         "--results", str(where / "results"), *args],
        capture_output=True, text=True, timeout=180, cwd=where,
    )  # fmt: skip


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The final table: (mode, scenario) -> the row's fields."""
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0] in BOTH_MODES:
            rows[(fields[0], fields[1])] = fields
    return rows


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    where = tmp_path_factory.mktemp("matrix")
    completed = matrix(where, TWO_SCENARIOS, *SHORT)
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    return where, completed.stdout


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One scenario in the one enabled mode, by a master and two local workers."""
    where = tmp_path_factory.mktemp("matrix-one-run")
    completed = matrix(where, ONE_RUN, *SHORT, "--users", "2", "--workers", "2")
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    return where, completed.stdout


def test_matrix_runs_each_scenario_in_each_mode_and_compares_them(
    two_by_two: tuple[Path, str],
) -> None:
    where, stdout = two_by_two
    results = where / "results"
    for mode in BOTH_MODES:
        for scenario in ("batch_processing", "cold_start"):
            meta = run_json(results / f"{mode}-{scenario}")
            assert meta["status"] == "finished" and meta["mode"] == mode
            assert meta["cache_reset"]["status"] == "reset"
            with open(results / f"{mode}-{scenario}" / "requests.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert rows and {row["scenario"] for row in rows} == {scenario}
            assert table_rows(stdout)[(mode, scenario)][2] == "finished"
    report = (results / "comparison" / "comparison.md").read_text()
    for mode in BOTH_MODES:
        assert f"| {mode}-cold_start | {mode} | cold_start |" in report
    assert f"comparison: {results / 'comparison' / 'comparison.md'}" in stdout
    assert "[4/4] pd_disaggregated cold_start: starting (elapsed " in stdout
    assert " left)" in stdout


def test_second_invocation_skips_completed_runs(two_by_two: tuple[Path, str]) -> None:
    where, _ = two_by_two
    results = where / "results"
    before = {run.name: run_json(run)["started_at"] for run in results.glob("*_*-*")}
    completed = matrix(where, TWO_SCENARIOS, *SHORT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "(0 to run, 4 complete)" in completed.stdout
    assert "starting the simulated stack" not in completed.stdout
    assert {row[2] for row in table_rows(completed.stdout).values()} == {"skipped"}
    assert {run.name: run_json(run)["started_at"] for run in results.glob("*_*-*")} == before
    assert (results / "comparison" / "comparison.md").exists()


def test_force_runs_a_completed_run_again_and_keeps_the_old_one(
    two_by_two: tuple[Path, str],
) -> None:
    where, _ = two_by_two
    results = where / "results"
    run = results / "non_disaggregated-cold_start"
    before = run_json(run)["started_at"]
    completed = matrix(
        where, TWO_SCENARIOS, *SHORT, "--force",
        "--modes", "non_disaggregated", "--scenarios", "cold_start",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    assert table_rows(completed.stdout)[("non_disaggregated", "cold_start")][2] == "finished"
    assert run_json(run)["status"] == "finished"
    assert run_json(run)["started_at"] != before
    kept = results / "previous" / "non_disaggregated-cold_start.1"
    assert run_json(kept)["started_at"] == before
    assert (kept / "locust.log").exists()


def test_disabled_mode_is_not_run(one_run: tuple[Path, str]) -> None:
    where, stdout = one_run
    results = where / "results"
    assert "x 1 mode(s)" in stdout
    assert (results / "non_disaggregated-cold_start").is_dir()
    assert not list(results.glob("pd_disaggregated*"))
    assert not list((results / "locust").glob("pd_disaggregated*"))
    assert set(table_rows(stdout)) == {("non_disaggregated", "cold_start")}


def test_workers_run_behind_one_master(one_run: tuple[Path, str]) -> None:
    where, _ = one_run
    run = where / "results" / "non_disaggregated-cold_start"
    with open(run / "requests.csv", newline="") as handle:
        workers = {row["worker_id"] for row in csv.DictReader(handle)}
    assert len(workers) == 2
    assert len(run_json(run)["fleet"]["workers"]) == 2


def test_failed_run_is_retried_once_then_reported_with_exit_1(tmp_path: Path) -> None:
    completed = matrix(tmp_path, TOO_LONG, *SHORT)
    results = tmp_path / "results"
    assert completed.returncode == 1, completed.stderr[-3000:] + completed.stdout[-3000:]
    assert completed.stdout.count("non_disaggregated too_long: retrying once") == 1
    row = table_rows(completed.stdout)[("non_disaggregated", "too_long")]
    assert row[2:4] == ["failed", "2"]
    (reason,) = [line for line in completed.stdout.splitlines() if line.startswith("failed: ")]
    assert reason.startswith("failed: non_disaggregated too_long: ")
    assert "do not fit max_model_len" in reason
    # The first attempt's log is kept beside the second's.
    assert (results / "previous" / "non_disaggregated-too_long.1" / "locust.log").exists()
    assert (results / "locust" / "non_disaggregated-too_long.log").exists()


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        (TWO_SCENARIOS, ["--sim", "--scenarios", "nope"], "--scenarios: nope is not an enabled"),
        (ONE_RUN, ["--modes", "pd_disaggregated"], "--modes: pd_disaggregated is not an enabled"),
        (
            "deployment_modes:\n  pd_disaggregated: {enabled: false}\n"
            "  non_disaggregated: {enabled: false}\n",
            [],
            "no enabled mode to run",
        ),
        (
            "deployment_modes:\n  pd_disaggregated: {enabled: false}\n"
            "  non_disaggregated: {base_url: 'http://127.0.0.1:1/v1'}\n",
            [],
            "deployment_modes.non_disaggregated: pre-flight: ",
        ),
    ],
    ids=["unknown scenario", "disabled mode", "no enabled mode", "unreachable target"],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, args: list[str], message: str
) -> None:
    # In this process: bad input is found before any run starts (Locust is never imported).
    path = tmp_path / "config.yaml"
    path.write_text(config)
    results = tmp_path / "results"
    code = main(["matrix", "--config", str(path), "--results", str(results), *args])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2
    assert line.startswith("kvswarm: ") and message in line
    assert not results.exists()
