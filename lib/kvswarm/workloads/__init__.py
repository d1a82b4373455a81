"""Workload generators: the prompts of each scenario, with deterministic shared prefixes.

Nothing here knows HTTP or Locust. A scenario of the config names a workload type
(`workload_types()`: the five of the original suite, each with its defaults, plus any
other registered here); a User class builds one `Workload` per simulated user with
`make_workload`, sends each `next_request()` and hands the reply back with
`observe_reply()`. See `reuse` for when a request is an expected hit, `pool` for how shared
prefixes are made identical across workers and runs, and `kvswarm.tokens` for sizing.

A new workload type is one module here that registers its `Workload` subclass with
`register_workload(name, defaults=ScenarioConfig(type=name, ...))` (held in a
`kvswarm.registry.Registry`, as for every pluggable kind), named in `_TYPES` below so
that it is registered before any config is loaded.
"""

from __future__ import annotations

from importlib import import_module

from kvswarm.workloads.pool import (
    PoolItem,
    PrefixPool,
    SeenPrefixes,
    SharedMaterial,
    shared_material,
)
from kvswarm.workloads.registry import (
    WorkloadType,
    builtin_scenarios,
    make_workload,
    register_workload,
    workload_types,
)
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.workload import (
    Workload,
    WorkloadContext,
    WorkloadStats,
    WorkloadSummary,
    merge_stats,
)

# The modules of the workload types, imported (so registered) in this order: the order
# of the built-in scenarios in every config, the original suite's; then `trace`, which
# is not built in (a trace scenario names its file).
_TYPES = ("long_context", "code_generation", "multi_turn", "batch", "cold_start", "trace")
for _module in _TYPES:
    import_module(f"{__name__}.{_module}")

__all__ = [
    "PoolItem",
    "PrefixPool",
    "PromptRequest",
    "SeenPrefixes",
    "SharedMaterial",
    "Workload",
    "WorkloadContext",
    "WorkloadStats",
    "WorkloadSummary",
    "WorkloadType",
    "builtin_scenarios",
    "make_workload",
    "merge_stats",
    "register_workload",
    "shared_material",
    "workload_types",
]
