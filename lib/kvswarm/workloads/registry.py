"""The registry of workload types, and `make_workload`, the one way to build a workload.

A workload type is a `Workload` subclass registered under a name with its defaults:

    @register_workload("code_generation", defaults=ScenarioConfig(type="code_generation", ...))
    class CodeGenerationWorkload(PrefixWorkload): ...

A scenario (`scenarios.<name>` in the config) names its type; keys it leaves out take the
type's defaults. A built-in type also gives a scenario of its own name that every config
has unless it disables it. Adding a type is one module in this package, imported by the
package's `__init__` so that it registers before a config is loaded. The types are held in
a `kvswarm.registry.Registry`, the helper every pluggable kind registers through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from kvswarm.config import SCENARIO_NAME, ScenarioConfig
from kvswarm.registry import Registry
from kvswarm.tokens import TokenSizer
from kvswarm.workloads.pool import SharedMaterial, shared_material
from kvswarm.workloads.workload import Workload, WorkloadContext, tag_tokens_bound

__all__ = [
    "WorkloadType",
    "builtin_scenarios",
    "make_workload",
    "register_workload",
    "workload_types",
]

W = TypeVar("W", bound=type[Workload])


@dataclass(frozen=True)
class WorkloadType:
    """A registered workload type.

    - `name`: what `scenarios.<name>.type` says to use it;
    - `cls`: the `Workload` subclass that makes its prompts;
    - `defaults`: the config of a scenario of this type for every key it leaves out;
    - `builtin`: whether every config has a scenario named `name` with these defaults.
    """

    name: str
    cls: type[Workload]
    defaults: ScenarioConfig
    builtin: bool


_TYPES: Registry[WorkloadType] = Registry("workload type", listing="types")


def register_workload(
    name: str, *, defaults: ScenarioConfig, builtin: bool = True
) -> Callable[[W], W]:
    """Class decorator: register a `Workload` subclass as workload type `name`.

    `defaults.type` must be `name`. `builtin=False` for a type that makes no sense
    without settings of the user's own, so that no scenario of it exists by default.
    """
    if not SCENARIO_NAME.fullmatch(name):
        raise ValueError(f"workload type {name!r} is not a lower-case identifier")
    if defaults.type != name:
        raise ValueError(f"defaults of workload type {name!r} say type {defaults.type!r}")

    def register(cls: W) -> W:
        _TYPES.register(name, WorkloadType(name, cls, defaults, builtin))
        cls.workload_type = name
        return cls

    return register


def workload_types() -> Mapping[str, WorkloadType]:
    """Every registered workload type by name, in the order they were registered."""
    return _TYPES.view


def builtin_scenarios() -> dict[str, ScenarioConfig]:
    """The scenarios every config has: one per built-in type, named after it (a new dict)."""
    return {name: t.defaults for name, t in _TYPES.items() if t.builtin}


def make_workload(
    scenario: str,
    config: ScenarioConfig,
    *,
    seed: int,
    run_id: str,
    worker_id: str,
    user_id: int,
    sizer: TokenSizer,
    max_model_len: int,
    max_tokens: int,
    material: SharedMaterial | None = None,
) -> Workload:
    """The workload of one simulated user of scenario `scenario`, of type `config.type`.

    `seed` makes the shared prefixes (the same on every worker of every run); `run_id`
    (different for every run), `worker_id` (unique per worker process in the fleet) and
    `user_id` (unique per user within the process) make the unique parts unique, so a
    designed miss of one run is not a hit in the next. `max_tokens` is the run's; the
    scenario's own `max_tokens` overrides it. `material` defaults to the process-wide one
    of `sizer`, so every user of the process shares pools and the record of prefixes
    already sent.

    Raises `ConfigError` (`scenarios.<name>.<key>: ...`) for an unknown type or a config
    whose prompts + max_tokens cannot fit `max_model_len`.
    """
    registered = _TYPES.get(config.type, where=f"scenarios.{scenario}.type")
    if material is None:
        material = shared_material(sizer)
    elif material.sizer is not sizer:
        raise ValueError("material was made for another sizer")
    max_tokens = config.max_tokens or max_tokens
    tag_tokens = tag_tokens_bound(material, worker_id, user_id)
    registered.cls.check(
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
        run_id=run_id,
        worker_id=worker_id,
        user_id=user_id,
        max_model_len=max_model_len,
        max_tokens=max_tokens,
        material=material,
    )
    return registered.cls(context)
