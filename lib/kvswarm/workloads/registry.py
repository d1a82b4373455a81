"""The registry of scenario workloads, and `make_workload`, the one way to build them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from kvswarm.config import ScenarioConfig
from kvswarm.errors import ConfigError
from kvswarm.tokens import TokenSizer
from kvswarm.workloads.pool import SharedMaterial, shared_material
from kvswarm.workloads.workload import Workload, WorkloadContext, tag_tokens_bound

W = TypeVar("W", bound=type[Workload])

_WORKLOADS: dict[str, type[Workload]] = {}


def register_workload(scenario: str) -> Callable[[W], W]:
    """Class decorator: make a `Workload` subclass the workload of `scenario`."""

    def register(cls: W) -> W:
        if scenario in _WORKLOADS and _WORKLOADS[scenario] is not cls:
            raise ValueError(f"scenario {scenario!r} is already registered")
        cls.scenario = scenario
        _WORKLOADS[scenario] = cls
        return cls

    return register


def workload_types() -> Mapping[str, type[Workload]]:
    """Scenario name -> workload class, for every registered scenario."""
    return MappingProxyType(_WORKLOADS)


def make_workload(
    scenario: str,
    config: ScenarioConfig,
    *,
    seed: int,
    worker_id: str,
    user_id: int,
    sizer: TokenSizer,
    max_model_len: int,
    max_tokens: int,
    material: SharedMaterial | None = None,
) -> Workload:
    """The workload of one simulated user of `scenario`.

    `seed` makes the shared prefixes (the same on every worker); `worker_id` (unique per
    worker process in the cluster) and `user_id` (unique per user within the process) make
    the unique parts unique. `max_tokens` is the run's; the scenario's own `max_tokens`
    overrides it. `material` defaults to the process-wide one of `sizer`, so every user of
    the process shares pools and the record of prefixes already sent.

    Raises `ConfigError` (`scenarios.<name>.<key>: ...`) for an unknown scenario or a
    config whose prompts + max_tokens cannot fit `max_model_len`.
    """
    cls = _WORKLOADS.get(scenario)
    if cls is None:
        known = ", ".join(sorted(_WORKLOADS))
        raise ConfigError(f"scenarios.{scenario}: unknown scenario (known: {known})")
    if material is None:
        material = shared_material(sizer)
    elif material.sizer is not sizer:
        raise ValueError("material was made for another sizer")
    max_tokens = config.max_tokens or max_tokens
    tag_tokens = tag_tokens_bound(material, worker_id, user_id)
    cls.check(
        scenario,
        config,
        tag_tokens=tag_tokens,
        max_model_len=max_model_len,
        max_tokens=max_tokens,
    )
    context = WorkloadContext(
        scenario=scenario,
        config=config,
        seed=seed,
        worker_id=worker_id,
        user_id=user_id,
        max_model_len=max_model_len,
        max_tokens=max_tokens,
        material=material,
    )
    return cls(context)
