"""Step and sweep load plans: the load held at each of a list of levels for a while.

`--kv-steps 1,2,4,8 --kv-step-s 60` holds each level 60 s, in order, then ends the test.
In a closed loop a level is a number of users; in an open loop (`--kv-arrival`) it is the
fleet's arrival rate in requests per second, with `-u` users held throughout as the cap
on requests in flight. Every request's record carries the step it belongs to (the
`step` column of requests.csv: 0 for the first level), taken from its scheduled send
time in an open loop and its start otherwise, on one timeline shared by a fleet (the
master's, shipped to the workers with the spawn message), so the analysis can give each
level's latencies and SLO attainment and the highest level that met the SLOs. The shape
ticks once a second, so the test stops up to a second after the plan ends: an open loop
sends nothing more, and a closed loop's requests of that second have no step.

The plan is run by `StepShape`, a Locust `LoadTestShape` that kvswarm installs when the
option is given and the locustfile has no shape of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from locust import LoadTestShape

from kvswarm.errors import ConfigError

__all__ = ["StepPlan", "StepShape", "parse_steps"]


@dataclass(frozen=True)
class StepPlan:
    """Levels held `step_s` seconds each, in order; `unit` says what a level is:
    `users` (closed loop) or `requests_per_s` (open loop)."""

    levels: tuple[float, ...]
    step_s: float
    unit: str = "users"

    @property
    def duration_s(self) -> float:
        return len(self.levels) * self.step_s

    def step_at(self, elapsed_s: float) -> int | None:
        """The step `elapsed_s` seconds into the plan falls in (before it: step 0); None
        past its end."""
        if elapsed_s < 0:
            return 0
        step = math.floor(elapsed_s / self.step_s)
        return step if step < len(self.levels) else None

    def level_at(self, elapsed_s: float) -> float:
        """The level in force `elapsed_s` into the plan (past its end: the last)."""
        step = self.step_at(elapsed_s)
        return self.levels[-1 if step is None else step]


def parse_steps(text: str, step_s: float, open_loop: bool) -> StepPlan | None:
    """`--kv-steps` (comma-separated levels) and `--kv-step-s`; None when not given.
    `ConfigError` naming the option for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    unit = "requests_per_s" if open_loop else "users"
    levels: list[float] = []
    for item in text.split(","):
        try:
            level = float(item)
        except ValueError:
            level = -1.0
        whole = open_loop or level.is_integer()
        if not (level > 0 if open_loop else level >= 0) or not whole or math.isinf(level):
            what = "a rate above 0 (requests/s)" if open_loop else "a whole number of users"
            raise ConfigError(f"--kv-steps: each level must be {what}, got {item.strip()!r}")
        levels.append(level)
    if not step_s > 0:
        raise ConfigError(f"--kv-step-s: each step's seconds must be above 0, got {step_s:g}")
    return StepPlan(tuple(levels), step_s, unit)


class StepShape(LoadTestShape):
    """Runs a `StepPlan`: each tick, the users for the step in force, until the plan ends.

    `timeline_start()` gives the plan's origin on the wall clock once the run has opened
    (0 before: the first step); `users_for(level)` the users a level needs (the level
    itself in a closed loop, `-u` in an open one). Users start together (spawn rate =
    users), so a step's load is there from its first second.
    """

    use_common_options = False

    def __init__(
        self,
        plan: StepPlan,
        timeline_start: Callable[[], float],
        users_for: Callable[[float], int],
    ) -> None:
        super().__init__()
        self.plan = plan
        self._timeline_start = timeline_start
        self._users_for = users_for

    def tick(self) -> tuple[int, float] | None:
        origin = self._timeline_start()
        elapsed = time.time() - origin if origin else 0.0
        step = self.plan.step_at(elapsed)
        if step is None:
            return None
        users = self._users_for(self.plan.levels[step])
        return users, float(max(users, 1))
