"""`kvswarm demo`, shortened: both modes, every scenario, results and headline on disk."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

SCENARIOS = {
    "long_context_high_reuse",
    "code_generation",
    "multi_turn_conversation",
    "batch_processing",
    "cold_start",
}


def test_demo_runs_both_modes_and_writes_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "demo", "--seconds", "6", "--users", "5",
         "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    (root,) = tmp_path.glob("demo-*")
    assert f"results: {root}" in completed.stdout
    assert "simulated stack" in completed.stdout
    for mode in ("non_disaggregated", "pd_disaggregated"):
        run = root / f"run-{mode}"
        meta = json.loads((run / "run.json").read_text())
        assert meta["mode"] == mode and meta["engine"] == "sim"
        with open(run / "requests.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert {row["scenario"] for row in rows} == SCENARIOS
        assert all(row["failure"] in ("", "cancelled") for row in rows)
        assert (run / "summary.txt").exists()
        assert "[2/2] pd_disaggregated" in completed.stdout
    headline = (root / "headline.txt").read_text()
    assert headline in completed.stdout
    assert headline.count("cold_start") == 2
