"""`SimOptions`: everything that shapes a simulated stack, validated once.

Every knob here, in `CostModel` and in `FaultConfig` is also a `kvswarm sim` flag (see
`kvswarm.sim.knobs`); the defaults are the flags' defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from kvswarm.sim.faults import FaultConfig
from kvswarm.sim.knobs import check_knobs, knob
from kvswarm.sim.model import CostModel

SimMode = Literal["non_disaggregated", "pd_disaggregated"]
MODES: tuple[str, ...] = ("non_disaggregated", "pd_disaggregated")
DEFAULT_PORTS = {"non_disaggregated": 8000, "pd_disaggregated": 9000}


@dataclass(frozen=True)
class SimOptions:
    """A simulated stack: its mode, addresses, KV store, cost model and faults."""

    mode: SimMode = knob("non_disaggregated", "deployment to simulate", choices=MODES)
    host: str = knob("127.0.0.1", "address every simulated server listens on")
    port: int | None = knob(
        None,
        "entry port: the server's in non_disaggregated mode (default 8000), the proxy's in "
        "pd_disaggregated mode (default 9000); 0 picks a free port",
        type=int,
        ge=0,
    )
    prefiller_port: int = knob(8100, "PD mode: the prefiller's port (0 = any free port)", ge=0)
    decoder_port: int = knob(8200, "PD mode: the decoder's port (0 = any free port)", ge=0)
    model: str = knob("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "model name served and accepted")
    default_max_tokens: int = knob(256, "tokens generated when a request sets no max_tokens", ge=1)
    seed: int = knob(0, "seed of the fault-injection RNG")
    ground_truth: str | None = knob(
        None,
        "append one JSON line per request to this file (server-side timings)",
        type=str,
        metavar="PATH",
    )
    kv_store: str = knob(
        "auto",
        "PD mode: where KV chunks go; auto = mooncake when the mooncake extra is installed",
        choices=("auto", "mooncake", "memory"),
    )
    kv_chunk_tokens: int = knob(256, "PD mode: tokens per KV chunk in the store", ge=1)
    kv_value_bytes: int = knob(
        16384, "PD mode: bytes stored per chunk (real KV bytes only set the transfer time)", ge=1
    )
    memory_store_mb: int = knob(1024, "PD mode: capacity of the in-process store, MiB", ge=1)
    mooncake_rpc_port: int = knob(50052, "mooncake_master RPC port (0 = any free port)", ge=0)
    mooncake_metrics_port: int = knob(
        9003, "mooncake_master Prometheus metrics port (0 = any free port)", ge=0
    )
    mooncake_segment_mb: int = knob(
        128, "memory the sim's Mooncake store client contributes to the store, MiB", ge=1
    )
    cost: CostModel = dataclasses.field(default_factory=CostModel)
    faults: FaultConfig = dataclasses.field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        check_knobs(self)

    @property
    def pd(self) -> bool:
        return self.mode == "pd_disaggregated"

    @property
    def entry_port(self) -> int:
        """The port clients use: --port, else the mode's default."""
        return DEFAULT_PORTS[self.mode] if self.port is None else self.port

    def with_free_ports(self) -> SimOptions:
        """The same options with every port 0 (any free port), for tests and benchmarks."""
        return dataclasses.replace(
            self,
            port=0,
            prefiller_port=0,
            decoder_port=0,
            mooncake_rpc_port=0,
            mooncake_metrics_port=0,
        )
