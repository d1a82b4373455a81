"""Fault injection: which requests fail, how, and where in the stream.

Each request arriving at the stack's entry point (the server, or the proxy in PD mode)
draws one number from a seeded RNG and gets at most one random fault, chosen by the
configured rates (which must sum to at most 1):

- `error`: answered at once with `error_status` and a vLLM-shaped error body.
- `disconnect`: the connection is closed mid-stream, without the end of the stream.
- `stall`: no chunk for `stall_s` seconds mid-stream, then the stream goes on.
- `malformed_chunk`: one event mid-stream is cut-off JSON; the stream then goes on.
- `error_in_stream`: an `{"error": ...}` event mid-stream, then `data: [DONE]`.

"Mid-stream" is after `fault_token_index(max_tokens)` content tokens have been written.
Without streaming, `disconnect` closes the connection before the response, `stall` delays
it, `malformed_chunk` truncates its JSON and `error_in_stream` becomes a 500 error body.

Separately, `slow_start_s > 0` makes the stack slow when it starts: for requests arriving
in its first `slow_start_s` seconds, prefill and decode times are multiplied by a factor
falling linearly from `slow_start_factor` to 1; such requests count as `slow_start`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from kvswarm.errors import KvswarmError
from kvswarm.sim.knobs import check_knobs, knob

FaultKind = Literal["error", "disconnect", "stall", "malformed_chunk", "error_in_stream"]
RANDOM_FAULTS: tuple[FaultKind, ...] = (
    "error",
    "disconnect",
    "stall",
    "malformed_chunk",
    "error_in_stream",
)
SLOW_START = "slow_start"
ALL_FAULT_KINDS: tuple[str, ...] = (*RANDOM_FAULTS, SLOW_START)


@dataclass(frozen=True)
class FaultConfig:
    """Rates (0-1 per request) and shapes of injected faults; all off by default."""

    error_rate: float = knob(
        0.0, "share of requests answered with --fault-error-status", ge=0, le=1
    )
    error_status: int = knob(500, "HTTP status of injected errors", ge=400, le=599)
    disconnect_rate: float = knob(0.0, "share of requests disconnected mid-stream", ge=0, le=1)
    stall_rate: float = knob(0.0, "share of requests that stall mid-stream", ge=0, le=1)
    stall_s: float = knob(5.0, "seconds without a chunk in a stall", ge=0)
    malformed_chunk_rate: float = knob(
        0.0, "share of requests with one malformed chunk mid-stream", ge=0, le=1
    )
    error_in_stream_rate: float = knob(
        0.0, "share of requests ending with an error object mid-stream", ge=0, le=1
    )
    slow_start_s: float = knob(0.0, "seconds after start during which the stack is slow", ge=0)
    slow_start_factor: float = knob(5.0, "slowdown at start, falling linearly to 1", ge=1)

    def __post_init__(self) -> None:
        check_knobs(self, prefix="fault-")
        if sum(self.rates()) > 1.0 + 1e-9:
            raise KvswarmError(
                f"fault rates add up to {sum(self.rates()):g}; they must add up to at most 1"
            )

    def rates(self) -> tuple[float, ...]:
        """The rate of each kind in RANDOM_FAULTS, in that order."""
        return (
            self.error_rate,
            self.disconnect_rate,
            self.stall_rate,
            self.malformed_chunk_rate,
            self.error_in_stream_rate,
        )


def fault_token_index(max_tokens: int) -> int:
    """How many content tokens are written before a mid-stream fault (at least one)."""
    return max(1, max_tokens // 2)


class FaultInjector:
    """Draws each request's fault from a seeded RNG and computes the slow-start factor."""

    def __init__(self, config: FaultConfig, seed: int, started_s: float) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._started_s = started_s
        self._bounds: list[tuple[float, FaultKind]] = []
        total = 0.0
        for kind, rate in zip(RANDOM_FAULTS, config.rates(), strict=True):
            if rate > 0:
                total += rate
                self._bounds.append((total, kind))

    def draw(self) -> FaultKind | None:
        """The random fault of the next request, or None."""
        if not self._bounds:
            return None
        value = self._rng.random()
        for bound, kind in self._bounds:
            if value < bound:
                return kind
        return None

    def slowdown(self, now_s: float) -> float:
        """The factor applied to a request arriving at `now_s` (1.0 outside slow start)."""
        window = self.config.slow_start_s
        elapsed = now_s - self._started_s
        if window <= 0 or elapsed >= window:
            return 1.0
        return 1.0 + (self.config.slow_start_factor - 1.0) * (1.0 - max(0.0, elapsed) / window)
