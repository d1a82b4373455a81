"""`kvswarm demo`, shortened: both modes, every scenario of its config run on its own, the
headline on disk, and the PD runs served by the real Mooncake store."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from kvswarm.analysis.headline import kv_store, scenario_headline
from kvswarm.analysis.runs import load_run
from kvswarm.config import load_config
from kvswarm.demo import MODES, scenario_configs

pytestmark = pytest.mark.slow

EXTRA_SCENARIO = """
scenarios:
  long_context_small:
    type: long_context_high_reuse
    shared_tokens_min: 1000
    shared_tokens_max: 1500
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One short demo (one user per scenario, so hits never wait behind a miss's prefill)."""
    where = tmp_path_factory.mktemp("demo")
    # One scenario more, added in YAML only: it runs in the demo like the built-in ones.
    extra = where / "extra.yaml"
    extra.write_text(EXTRA_SCENARIO)
    completed = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "demo", "--seconds", "3", "--users", "1",
         "--results", str(where), "--config", str(extra)],
        capture_output=True, text=True, timeout=240, cwd=where,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    (root,) = where.glob("demo-*")
    return root, completed.stdout


def _scenarios(root: Path) -> list[str]:
    return [name for name, _ in scenario_configs(load_config(root / "config.yaml"))]


def test_demo_runs_each_scenario_alone_in_both_modes(demo: tuple[Path, str]) -> None:
    root, stdout = demo
    assert f"results: {root}" in stdout
    assert "simulated stack" in stdout
    scenarios = _scenarios(root)
    assert len(scenarios) >= 6 and "long_context_small" in scenarios
    for mode in MODES:
        for scenario in scenarios:
            run = load_run(root / mode / scenario)
            assert run.record.mode == mode and run.record.engine == "sim"
            with open(run.path / "requests.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert rows and {row["scenario"] for row in rows} == {scenario}
            assert all(row["failure"] in ("", "cancelled") for row in rows)
            assert (run.path / "summary.txt").exists()
    assert f"[{2 * len(scenarios)}/{2 * len(scenarios)}] pd_disaggregated" in stdout


def test_demo_headline_has_a_row_per_scenario_and_hits_beat_misses(
    demo: tuple[Path, str],
) -> None:
    root, stdout = demo
    headline = (root / "headline.txt").read_text()
    assert headline in stdout
    assert "original suite -> this demo" in headline
    lines = headline.splitlines()
    for scenario in _scenarios(root):
        assert sum(line.startswith(f"{scenario} ") for line in lines) == len(MODES)
        for mode in MODES:
            row = scenario_headline(load_run(root / mode / scenario), scenario)
            if row.configured_reuse:
                assert row.ttft_p50_hit_ms is not None and row.ttft_p50_miss_ms is not None
                assert row.ttft_p50_hit_ms < row.ttft_p50_miss_ms, (mode, row)


def test_demo_pd_runs_were_served_by_the_mooncake_store(demo: tuple[Path, str]) -> None:
    from kvswarm.sim.store import mooncake_installed

    if not mooncake_installed():
        pytest.skip("the mooncake extra is not importable: the PD demo used an in-process store")
    root, _ = demo
    for scenario in _scenarios(root):
        assert kv_store(load_run(root / "pd_disaggregated" / scenario)) == "mooncake"
    assert "KV store: mooncake" in (root / "headline.txt").read_text()
