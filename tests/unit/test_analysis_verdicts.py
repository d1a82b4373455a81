"""Verdicts against targets: designed effects pass or fail, small or overlapping samples are
inconclusive, and the bootstrap interval covers the true difference about 95% of the time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvswarm.analysis.bootstrap import compare_medians
from kvswarm.analysis.compare import verdicts_of
from kvswarm.analysis.runs import load_run
from kvswarm.analysis.synthetic import SyntheticScenario, write_synthetic_run
from kvswarm.analysis.targets import Target, judge, targets_from


def cache_verdict(tmp_path: Path, reduction: float, requests: int = 400, sigma: float = 0.2):
    scenario = SyntheticScenario("batch_processing", requests, 0.5, 100.0 * (1 - reduction),
                                 100.0, sigma=sigma)  # fmt: skip
    run = load_run(write_synthetic_run(tmp_path / "run", [scenario]))
    (verdict,) = [v for v in verdicts_of([run]) if v.analysis == "cache effect"]
    return verdict


def test_a_designed_65_percent_ttft_cut_passes_the_60_70_target(tmp_path: Path) -> None:
    verdict = cache_verdict(tmp_path, 0.65)
    assert verdict.outcome == "PASS"
    assert abs(verdict.estimate - 0.65) < 0.03
    assert verdict.ci[0] <= verdict.estimate <= verdict.ci[1]


def test_a_designed_40_percent_ttft_cut_fails(tmp_path: Path) -> None:
    verdict = cache_verdict(tmp_path, 0.40)
    assert verdict.outcome == "FAIL"


def test_a_tiny_sample_is_inconclusive(tmp_path: Path) -> None:
    verdict = cache_verdict(tmp_path, 0.65, requests=12)
    assert verdict.outcome == "INCONCLUSIVE"
    assert "too small" in verdict.reason


def test_an_overlapping_sample_is_inconclusive(tmp_path: Path) -> None:
    # True cut exactly at the target's bound, wide spread: the interval straddles 60%.
    verdict = cache_verdict(tmp_path, 0.60, requests=200, sigma=0.8)
    assert verdict.outcome == "INCONCLUSIVE"
    assert verdict.ci[0] < 0.60 < verdict.ci[1]


def test_pd_throughput_gain_and_tpot_are_judged_per_scenario(tmp_path: Path) -> None:
    base = SyntheticScenario("cold_start", 1000, 0.0, 50, 100, tpot_ms=10.0)
    pd_ = SyntheticScenario("cold_start", 2750, 0.0, 50, 100, tpot_ms=10.5)  # +175%
    runs = [
        load_run(write_synthetic_run(tmp_path / "a", [base], "non_disaggregated", seed=1)),
        load_run(write_synthetic_run(tmp_path / "b", [pd_], "pd_disaggregated", seed=2)),
    ]
    verdicts = {v.measure: v for v in verdicts_of(runs)}
    gain = verdicts["throughput gain (requests/s, mean of windows)"]
    assert gain.outcome == "PASS" and abs(gain.estimate - 1.75) < 0.1
    tpot = verdicts["TPOT difference (median)"]
    assert tpot.outcome == "PASS" and abs(tpot.estimate - 0.05) < 0.02
    assert verdicts["TTFT difference (median)"].outcome == "-"


def test_targets_from_the_runs_config_change_the_verdict(tmp_path: Path) -> None:
    scenario = SyntheticScenario("batch_processing", 400, 0.5, 60.0, 100.0, sigma=0.2)
    config = {"targets": {"cache_ttft_reduction": {"low": 0.30, "high": 0.50}}}
    run = load_run(write_synthetic_run(tmp_path / "run", [scenario], config=config))
    (verdict,) = [v for v in verdicts_of([run]) if v.analysis == "cache effect"]
    assert verdict.outcome == "PASS" and verdict.target.low == 0.30


def test_judge_rules() -> None:
    within = Target(-0.2, 0.2, "within")
    assert judge(within, (-0.05, 0.05))[0] == "PASS"
    assert judge(within, (0.25, 0.3))[0] == "FAIL"
    assert judge(within, (0.1, 0.3))[0] == "INCONCLUSIVE"
    higher = Target(1.5, 2.0, "higher")
    assert judge(higher, (2.5, 3.0))[0] == "PASS"
    assert judge(higher, (0.5, 1.0))[0] == "FAIL"
    assert judge(higher, (1.0, 2.0))[0] == "INCONCLUSIVE"
    assert targets_from(None).pd_throughput_gain.low == 1.5


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    true_a, true_b = 100.0, 40.0  # lognormal medians
    covered = 0
    repetitions = 200
    for seed in range(repetitions):
        a = true_a * rng.lognormal(0.0, 0.4, 150)
        b = true_b * rng.lognormal(0.0, 0.4, 120)
        result = compare_medians(a, b, resamples=1000, seed=seed)
        low, high = result.difference_ci
        covered += low <= true_b - true_a <= high
    assert 0.90 <= covered / repetitions <= 0.99


def test_large_groups_resample_the_median_through_its_rank() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(100.0, 10.0, 200_000)
    b = rng.normal(90.0, 10.0, 200_000)
    result = compare_medians(a, b)
    # Standard error of a normal median: 1.2533 * sigma / sqrt(n), per group.
    se = np.hypot(1.2533 * 10 / np.sqrt(200_000), 1.2533 * 10 / np.sqrt(200_000))
    width = result.difference_ci[1] - result.difference_ci[0]
    assert abs(width - 2 * 1.96 * se) < 0.35 * 2 * 1.96 * se
    assert result.difference_ci[0] <= -10.0 + 0.2 and result.difference_ci[1] >= -10.0 - 0.2
