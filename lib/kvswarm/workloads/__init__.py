"""Workload generators: the prompts of each scenario, with deterministic shared prefixes.

Nothing here knows HTTP or Locust. A User class builds one `Workload` per simulated user
with `make_workload`, sends each `next_request()` and hands the reply back with
`observe_reply()`. See `reuse` for when a request is an expected hit, `pool` for how shared
prefixes are made identical across workers, and `kvswarm.tokens` for sizing.
"""

from __future__ import annotations

# Importing a scenario module registers its workload.
from kvswarm.workloads import (  # noqa: F401
    batch,
    code_generation,
    cold_start,
    long_context,
    multi_turn,
)
from kvswarm.workloads.pool import (
    PoolItem,
    PrefixPool,
    SeenPrefixes,
    SharedMaterial,
    shared_material,
)
from kvswarm.workloads.registry import make_workload, register_workload, workload_types
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.workload import Workload, WorkloadStats

__all__ = [
    "PoolItem",
    "PrefixPool",
    "PromptRequest",
    "SeenPrefixes",
    "SharedMaterial",
    "Workload",
    "WorkloadStats",
    "make_workload",
    "register_workload",
    "shared_material",
    "workload_types",
]
