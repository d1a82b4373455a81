"""Step plans (`--kv-steps`): parsing, which step a time falls in, the open loop's rate
by step, and each request's SLO verdict."""

from __future__ import annotations

import numpy as np
import pytest

from kvswarm.config import SloConfig
from kvswarm.errors import ConfigError
from kvswarm.locust.arrivals import ArrivalPlan, ArrivalSchedule
from kvswarm.locust.steps import StepPlan, parse_steps


def test_levels_are_users_in_a_closed_loop_and_rates_in_an_open_one() -> None:
    assert parse_steps("1, 2,4", 30, open_loop=False) == StepPlan((1, 2, 4), 30, "users")
    assert parse_steps("0.5,2.5", 10, open_loop=True) == StepPlan((0.5, 2.5), 10, "requests_per_s")
    assert parse_steps("", 30, open_loop=False) is None


@pytest.mark.parametrize(
    ("text", "open_loop", "message"),
    [
        ("1,x", False, "--kv-steps: each level must be a whole number of users, got 'x'"),
        ("1.5", False, "--kv-steps: each level must be a whole number of users, got '1.5'"),
        ("2,0", True, "--kv-steps: each level must be a rate above 0 (requests/s), got '0'"),
        ("nan", True, "--kv-steps: each level must be a rate above 0 (requests/s), got 'nan'"),
    ],
)
def test_a_bad_level_is_one_line_naming_the_option(text, open_loop, message) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_steps(text, 30, open_loop)
    assert str(caught.value) == message


def test_a_step_needs_a_length() -> None:
    with pytest.raises(ConfigError, match="^--kv-step-s: each step's seconds must be above 0"):
        parse_steps("1,2", 0, open_loop=False)


def test_the_step_of_a_time_and_the_end_of_the_plan() -> None:
    plan = StepPlan((1, 2, 4), 10)
    assert [plan.step_at(t) for t in (-1, 0, 9.99, 10, 29.9, 30)] == [0, 0, 0, 1, 2, None]
    assert plan.level_at(15) == 2 and plan.level_at(45) == 4
    assert plan.duration_s == 30


def stepped_schedule(plan: StepPlan, share: float, seed: int) -> ArrivalSchedule:
    """An open loop following `plan` from its monotonic 0 (the plan starts there)."""
    origin: list[float] = []
    schedule = ArrivalSchedule(
        ArrivalPlan("poisson", 0.0), share, seed=seed, start_s=0.0, steps=plan,
        timeline_start=lambda: origin[0],
    )  # fmt: skip
    origin.append(schedule.to_unix(0.0))
    return schedule


def test_the_open_loop_rate_follows_the_steps() -> None:
    """Arrivals at 20/s for the first 10 s, then 80/s: the gaps' means say so."""
    plan = StepPlan((20.0, 80.0), 10.0, "requests_per_s")
    schedule = stepped_schedule(plan, share=1.0, seed=3)
    times = []
    while (t := schedule.take()) < 20.0:
        times.append(t)
    times = np.array(times)
    first, second = times[times < 10], times[times >= 10]
    assert len(first) == pytest.approx(200, rel=0.25)
    assert len(second) == pytest.approx(800, rel=0.15)


def test_a_fleet_worker_sends_its_share_of_each_step() -> None:
    """A quarter of 40/s: gaps of 1/10 s on average."""
    plan = StepPlan((40.0,), 1000.0, "requests_per_s")
    schedule = stepped_schedule(plan, share=0.25, seed=1)
    gaps = np.diff([schedule.take() for _ in range(2000)])
    assert gaps.mean() == pytest.approx(1 / 10, rel=0.1)


@pytest.mark.parametrize(
    ("ok", "ttft_s", "tpot_s", "e2e_s", "met"),
    [
        (True, 0.5, 0.05, 9.0, True),
        (True, 2.5, 0.05, 9.0, False),  # TTFT over
        (True, 0.5, 0.2, 9.0, False),  # TPOT over
        (True, 0.5, None, 9.0, True),  # one token: no TPOT to judge
        (True, 0.5, 0.05, 11.0, False),  # E2E over
        (False, 0.5, 0.05, 9.0, False),  # failed
        (True, None, None, 9.0, False),  # no first token
    ],
)
def test_a_request_meets_the_slos_within_every_limit(ok, ttft_s, tpot_s, e2e_s, met) -> None:
    slo = SloConfig(ttft_ms=2000, tpot_ms=100, e2e_ms=10_000)
    assert slo.met_by(ok, ttft_s, tpot_s, e2e_s) is met


def test_without_an_e2e_limit_e2e_is_not_judged() -> None:
    assert SloConfig().met_by(True, 0.1, 0.01, 10_000.0)


def test_no_arrivals_after_the_plan_ends() -> None:
    plan = StepPlan((50.0,), 2.0, "requests_per_s")
    schedule = stepped_schedule(plan, share=1.0, seed=2)
    times = [schedule.take() for _ in range(200)]
    within = [t for t in times if t < 2.0]
    assert len(within) == pytest.approx(100, rel=0.3)
    assert all(t >= 3600 for t in times[len(within) + 1 :])  # a day away: none to send
