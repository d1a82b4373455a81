"""The targets comparisons are judged against, and the PASS/FAIL/INCONCLUSIVE rule.

Defaults are the original suite's: a cache hit cuts TTFT by 60-70%; PD and non-PD TPOT
differ by less than 20%; PD disaggregation raises throughput by 150-200%. A run's config
can change them under a `targets:` mapping (the first run with one wins), e.g.

    targets:
      cache_ttft_reduction: {low: 0.5, high: null}
      pd_tpot_difference: {low: -0.1, high: 0.1}
      pd_throughput_gain: {low: 1.0}
      min_requests: 30
      throughput_windows: 10
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kvswarm.errors import ConfigError

__all__ = ["PASS", "FAIL", "INCONCLUSIVE", "Target", "Targets", "judge", "targets_from"]

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


@dataclass(frozen=True)
class Target:
    """An interval the estimate should lie in (shares: 0.6 = 60%). `better="higher"`: only
    `low` decides (a result above `high` passes and is noted as above the expected range);
    `better="within"`: the whole interval must hold it."""

    low: float | None
    high: float | None
    better: str = "higher"

    def describe(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:+.0%}"
        high = "+inf" if self.high is None else f"{self.high:+.0%}"
        if self.better == "within":
            return f"within [{low}, {high}]"
        return f">= {low}" + (f" (expected up to {high})" if self.high is not None else "")


@dataclass(frozen=True)
class Targets:
    """Every target and the smallest groups a verdict is given on."""

    cache_ttft_reduction: Target = Target(0.60, 0.70, "higher")
    pd_tpot_difference: Target = Target(-0.20, 0.20, "within")
    pd_throughput_gain: Target = Target(1.50, 2.00, "higher")
    min_requests: int = 20
    min_windows: int = 5
    throughput_windows: int = 10
    source: str = "defaults (the original suite's)"


def _target(value: Any, default: Target, where: str) -> Target:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping with low/high, found {value!r}")
    unknown = set(value) - {"low", "high"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]} (expected low, high)")
    bounds = {}
    for key in ("low", "high"):
        bound = value.get(key, getattr(default, key))
        if bound is not None and not isinstance(bound, int | float):
            raise ConfigError(f"{where}.{key}: expected a number or null, found {bound!r}")
        bounds[key] = None if bound is None else float(bound)
    return replace(default, **bounds)


def targets_from(config: Mapping[str, Any] | None, source: str = "config") -> Targets:
    """Targets from a config's `targets:` mapping (None or absent: the defaults)."""
    data = (config or {}).get("targets")
    if not data:
        return Targets()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: targets: expected a mapping, found {data!r}")
    defaults = Targets()
    changes: dict[str, Any] = {"source": source}
    known = {f.name for f in fields(Targets)} - {"source"}
    for key, value in data.items():
        where = f"{source}: targets.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown target (known: {', '.join(sorted(known))})")
        default = getattr(defaults, key)
        if isinstance(default, Target):
            changes[key] = _target(value, default, where)
        elif isinstance(value, int) and value > 0:
            changes[key] = value
        else:
            raise ConfigError(f"{where}: expected a positive integer, found {value!r}")
    return replace(defaults, **changes)


def judge(target: Target, ci: tuple[float, float]) -> tuple[str, str]:
    """The outcome of an interval against a target, and why."""
    low, high = ci
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE, "no interval"
    t_low = -math.inf if target.low is None else target.low
    t_high = math.inf if target.high is None else target.high
    if target.better == "within":
        if t_low <= low and high <= t_high:
            return PASS, "the interval lies within the target"
        if high < t_low or low > t_high:
            return FAIL, "the interval lies outside the target"
        return INCONCLUSIVE, "the interval straddles a bound of the target"
    if low >= t_low:
        above = " (above the expected range)" if low > t_high else ""
        return PASS, f"the interval lies above the target's lower bound{above}"
    if high < t_low:
        return FAIL, "the interval lies below the target"
    return INCONCLUSIVE, "the interval straddles the target's lower bound"
