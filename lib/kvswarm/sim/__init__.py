"""kvswarm's embedded simulated serving stack (`kvswarm sim`).

A simulator, not a server of any model: an OpenAI-compatible HTTP server with vLLM's
metric names whose latencies come from a cost model (prefix cache, prefill per uncached
token, decode time growing with the batch, a request queue), in two deployments:
`non_disaggregated` (one engine) and `pd_disaggregated` (prefiller, KV transfer through a
Mooncake or in-process store, decoder, behind a proxy). It also injects faults and can
log server-side ground truth per request.

Python API:

    from kvswarm.sim import SimOptions, CostModel, FaultConfig, start_stack, spawn_stack

    with start_stack(SimOptions().with_free_ports()) as stack:   # background thread
        stack.base_url       # "http://127.0.0.1:PORT/v1"
        stack.metrics_urls   # {"server": "http://127.0.0.1:PORT/metrics"}

    with spawn_stack(SimOptions(mode="pd_disaggregated").with_free_ports()) as stack:
        ...                  # child process; ready once /health answers
"""

from __future__ import annotations

from kvswarm.sim.faults import FaultConfig
from kvswarm.sim.model import CostModel
from kvswarm.sim.options import SimOptions
from kvswarm.sim.stack import (
    RunningStack,
    Stack,
    StackInfo,
    StackProcess,
    spawn_stack,
    start_stack,
)

__all__ = [
    "CostModel",
    "FaultConfig",
    "RunningStack",
    "SimOptions",
    "Stack",
    "StackInfo",
    "StackProcess",
    "spawn_stack",
    "start_stack",
]
