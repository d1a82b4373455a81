"""Open-loop arrivals: requests sent on a schedule that a slow server does not slow down.

Closed-loop users (the default) send their next request when the previous one ends, so a
server that slows down receives fewer requests, and queueing it would cause is hidden
(coordinated omission). With `--kv-arrival poisson|gamma --kv-rate R` requests are sent
at arrival times drawn in advance: inter-arrival gaps from an exponential (Poisson
arrivals) or a gamma distribution of shape `--kv-burstiness` (below 1: burstier, above 1:
more regular; 1 is Poisson), mean 1/R, from a seeded generator.

Users are the senders: each idle user takes the next arrival time and sends its request
then, so `-u` caps the requests in flight. When every user is busy at an arrival, its
request goes out late, when a user frees up: each record carries its scheduled time and
its lag (`scheduled_unix_s`, `send_lag_ms`), so latencies can be read from the schedule
as well as from the send, and the summary reports the lag. In a fleet each of W workers
sends R/W on its own generator (seeded with its index). With `--kv-steps` the rate
follows the step plan's levels on the fleet's common timeline (`kvswarm.locust.steps`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvswarm.locust.steps import StepPlan

__all__ = ["ARRIVALS", "ArrivalPlan", "ArrivalSchedule", "TraceSchedule", "monotonic_to_unix"]

ARRIVALS = ("closed", "poisson", "gamma")
NO_MORE_ARRIVALS_S = 86_400.0


@dataclass(frozen=True)
class ArrivalPlan:
    """How requests arrive: `closed` (users loop), or open loop at `rate_per_s`."""

    kind: str = "closed"
    rate_per_s: float = 0.0
    # Gamma shape of the inter-arrival gaps (1.0: exponential, as `poisson`).
    burstiness: float = 1.0
    # Seconds over which the rate rises linearly from 0 to `rate_per_s` (0: at once).
    ramp_s: float = 0.0

    @property
    def open_loop(self) -> bool:
        return self.kind != "closed"

    def shape(self) -> float:
        return 1.0 if self.kind == "poisson" else self.burstiness


class ArrivalSchedule:
    """One process's arrival times: `take()` hands the next one to the user asking."""

    def __init__(
        self,
        plan: ArrivalPlan,
        share: float,
        seed: int,
        start_s: float,
        steps: StepPlan | None = None,
        timeline_start: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """`share`: this process's part of the plan's rate (1/W of a W-worker fleet);
        `start_s`: the `time.monotonic()` of the first arrival's origin; `steps`: rates
        by step, from `timeline_start()` (wall clock; 0 until known: the first step)."""
        self.plan = plan
        self.share = share
        self.rate_per_s = plan.rate_per_s * share
        self.steps = steps
        self._timeline_start = timeline_start
        self._rng = np.random.default_rng(seed)
        self._start_s = start_s
        self._next_s = start_s
        # A ramp's clock: the arrivals so far in units of the full rate's mean gap.
        self._intensity = 0.0
        self._monotonic_to_unix = time.time() - time.monotonic()

    def gap_s(self, rate_per_s: float | None = None) -> float:
        """One inter-arrival gap, mean 1 / rate (this process's rate unless given)."""
        rate = rate_per_s or self.rate_per_s
        shape = self.plan.shape()
        return float(self._rng.gamma(shape, 1.0 / (rate * shape)))

    def take(self) -> float:
        """The next arrival time (`time.monotonic()` seconds). With steps, past the
        plan's end there are no more: a day away (the test stops within a second)."""
        if self.steps is None and self.plan.ramp_s > 0:
            return self._take_on_ramp()
        if self.steps is None:
            self._next_s += self.gap_s()
            return self._next_s
        self._next_s += self.gap_s(self.steps.level_at(self._elapsed(self._next_s)) * self.share)
        if self.steps.step_at(self._elapsed(self._next_s)) is None:
            return self._next_s + NO_MORE_ARRIVALS_S
        return self._next_s

    def _take_on_ramp(self) -> float:
        """The next arrival while the rate rises linearly to its target over `ramp_s`.

        The gaps are drawn as at the full rate, in units of its mean gap, and laid on the
        ramp's time scale: with rate r(t) = R * min(1, t / T), the expected arrivals by t
        are R t^2 / 2T until T and R (t - T/2) after, and an arrival is placed where that
        count reaches the running sum of the drawn gaps (a renewal process, Poisson when
        the gaps are exponential, with its time changed to follow the ramp)."""
        shape = self.plan.shape()
        self._intensity += float(self._rng.gamma(shape, 1.0 / shape))
        rate, ramp = self.rate_per_s, self.plan.ramp_s
        if self._intensity <= rate * ramp / 2:
            elapsed = math.sqrt(2.0 * ramp * self._intensity / rate)
        else:
            elapsed = self._intensity / rate + ramp / 2
        self._next_s = self._start_s + elapsed
        return self._next_s

    def _elapsed(self, monotonic_s: float) -> float:
        """Seconds into the step plan at `monotonic_s` (0 until the plan's start is known)."""
        origin = self._timeline_start()
        return self.to_unix(monotonic_s) - origin if origin else 0.0

    def to_unix(self, monotonic_s: float) -> float:
        """A monotonic arrival time on the wall clock of requests.csv's start times."""
        return monotonic_s + self._monotonic_to_unix


class TraceSchedule:
    """A trace's rows on the trace's own timeline, for one process of a replay.

    Row `p` of the selected rows is due `offsets_s[p]` seconds after the replay's start;
    a process takes every `workers`-th row from its `index`, so every row goes exactly
    once across a fleet whatever its size. Users take rows in order and send each at its
    time: open loop, as with `ArrivalSchedule` (a row whose time finds every user busy
    goes late, and its lag says so).
    """

    def __init__(self, offsets_s: list[float], index: int, workers: int, start_s: float) -> None:
        self._due = [(p, start_s + offsets_s[p]) for p in range(index, len(offsets_s), workers)]
        self._next = 0

    def __len__(self) -> int:
        return len(self._due)

    def take(self) -> tuple[int, float] | None:
        """The next row's position and time (`time.monotonic()` s); None when all went."""
        if self._next >= len(self._due):
            return None
        slot = self._due[self._next]
        self._next += 1
        return slot


def monotonic_to_unix(monotonic_s: float) -> float:
    """A `time.monotonic()` instant on the wall clock of requests.csv's start times."""
    return monotonic_s + time.time() - time.monotonic()
