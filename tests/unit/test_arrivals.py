"""Open-loop arrival schedules: gaps drawn from the configured distribution, at the rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvswarm.errors import ConfigError
from kvswarm.locust.arrivals import ArrivalPlan, ArrivalSchedule
from kvswarm.locust.options import KvOptions


def gaps(plan: ArrivalPlan, n: int = 4000, share: float = 1.0, seed: int = 7) -> np.ndarray:
    schedule = ArrivalSchedule(plan, share, seed, start_s=0.0)
    times = np.array([schedule.take() for _ in range(n)])
    return np.diff(np.concatenate([[0.0], times]))


def ks_statistic(sample: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov distance between a sample and a distribution's CDF."""
    ordered = np.sort(sample)
    n = len(ordered)
    model = cdf(ordered)
    above = np.arange(1, n + 1) / n - model
    below = model - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


def ks_critical_5pct(n: int) -> float:
    return 1.358 / math.sqrt(n)


def test_poisson_gaps_are_exponential_at_the_rate() -> None:
    rate = 20.0
    sample = gaps(ArrivalPlan("poisson", rate))
    assert ks_statistic(sample, lambda x: 1 - np.exp(-rate * x)) < ks_critical_5pct(len(sample))
    assert sample.mean() == pytest.approx(1 / rate, rel=0.05)


def test_gamma_gaps_keep_the_rate_and_burstiness_sets_their_spread() -> None:
    bursty = gaps(ArrivalPlan("gamma", 10.0, burstiness=0.25))
    regular = gaps(ArrivalPlan("gamma", 10.0, burstiness=4.0))
    for sample in (bursty, regular):
        assert sample.mean() == pytest.approx(0.1, rel=0.08)
    # A gamma of shape k has a coefficient of variation of 1 / sqrt(k).
    assert bursty.std() / bursty.mean() == pytest.approx(2.0, rel=0.1)
    assert regular.std() / regular.mean() == pytest.approx(0.5, rel=0.1)


def test_a_workers_share_of_the_rate_spaces_its_arrivals() -> None:
    sample = gaps(ArrivalPlan("poisson", 30.0), share=1 / 3)
    assert sample.mean() == pytest.approx(0.1, rel=0.05)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    plan = ArrivalPlan("poisson", 5.0)
    assert np.array_equal(gaps(plan, 50, seed=1), gaps(plan, 50, seed=1))
    assert not np.array_equal(gaps(plan, 50, seed=1), gaps(plan, 50, seed=2))


class Parsed:
    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def test_an_open_loop_without_a_rate_is_one_line() -> None:
    with pytest.raises(ConfigError, match="--kv-arrival poisson: needs --kv-rate"):
        KvOptions.from_parsed(Parsed(kv_arrival="poisson", kv_rate=0.0))


def test_closed_loop_is_the_default_and_open_loop_is_read_from_the_options() -> None:
    assert not KvOptions.from_parsed(Parsed()).arrival.open_loop
    plan = KvOptions.from_parsed(Parsed(kv_arrival="gamma", kv_rate=8, kv_burstiness=0.5))
    assert plan.arrival == ArrivalPlan("gamma", 8.0, 0.5)
    assert KvOptions.from_parsed(Parsed(kv_arrival="gamma", kv_rate=8)).for_record()["arrival"] == {
        "kind": "gamma",
        "rate_per_s": 8.0,
        "burstiness": 1.0,
        "ramp_s": 0.0,
    }


def test_a_ramp_rises_linearly_to_the_rate() -> None:
    """Rate 100/s reached over 10 s: ~R T / 2 = 500 arrivals during the ramp, a quarter of
    them in its first half, then 100/s."""
    plan = ArrivalPlan("poisson", 100.0, ramp_s=10.0)
    schedule = ArrivalSchedule(plan, 1.0, seed=4, start_s=0.0)
    times = np.array([schedule.take() for _ in range(2500)])
    assert np.all(np.diff(times) > 0)
    assert (times < 10).sum() == pytest.approx(500, rel=0.1)
    assert (times < 5).sum() == pytest.approx(125, rel=0.2)
    after = times[(times >= 10) & (times < 20)]
    assert len(after) == pytest.approx(1000, rel=0.1)


@pytest.mark.parametrize(
    "values",
    [{"kv_ramp_s": 5.0}, {"kv_arrival": "poisson", "kv_steps": "1,2", "kv_ramp_s": 5.0}],
)
def test_a_ramp_is_for_an_open_loops_rate_only(values) -> None:
    with pytest.raises(ConfigError, match="^--kv-ramp-s: ramps an open loop's --kv-rate"):
        KvOptions.from_parsed(Parsed(**values))


def settings_for(tmp_path, config: str, **options: object):
    from kvswarm.locust.options import RunSettings

    path = tmp_path / "config.yaml"
    path.write_text(config)
    return RunSettings.resolve(
        KvOptions.from_parsed(Parsed(kv_config=str(path), **options)), "http://127.0.0.1:1"
    )


def test_the_config_load_section_sets_the_arrivals_and_steps(tmp_path) -> None:
    config = "load: {arrival: gamma, burstiness: 0.5, steps: [2, 4.5], step_s: 30}\n"
    options = settings_for(tmp_path, config).options
    assert options.arrival == ArrivalPlan("gamma", 0.0, 0.5)
    assert options.steps is not None and options.steps.levels == (2.0, 4.5)
    assert options.steps.step_s == 30 and options.steps.unit == "requests_per_s"


def test_any_load_option_replaces_the_config_load_section(tmp_path) -> None:
    config = "load: {arrival: poisson, rate_per_s: 5}\n"
    options = settings_for(tmp_path, config, kv_steps="1,2").options
    assert not options.arrival.open_loop
    assert options.steps is not None and options.steps.unit == "users"


def test_a_load_section_that_does_not_hold_together_names_its_keys(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, "load: {arrival: poisson}\n")
    assert str(caught.value) == (
        f"{tmp_path / 'config.yaml'}: load.arrival poisson: needs load.rate_per_s "
        "(requests per second) above 0"
    )
