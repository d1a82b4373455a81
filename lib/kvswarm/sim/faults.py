"""Fault injection: which requests fail, how, and where in the stream.

Each request arriving at the stack's entry point (the server, or the proxy in PD mode)
draws one number from a seeded RNG and gets at most one random fault, chosen by the
configured rates (which must sum to at most 1). Before any response byte:

- `error`: answered at once with `error_status` and a vLLM-shaped error body.
- `rate_limited` / `unavailable`: answered at once with 429 / 503; a share
  (`retry_after_share`) of them carry `Retry-After: <retry_after_s>`.
- `disconnect_before_head`: the request is read, then the connection is closed without
  a byte of response; on the first request of a connection only (on a reused one a
  client cannot tell it from a keep-alive connection closed while idle, and retries).
- `not_sse`: answered with status 200 and an HTML error page (`text/html`), as a
  misconfigured gateway or portal in front of the server does.
- `stall_first_token`: nothing for `stall_s` seconds before the response head and the
  first token, then the stream goes on.
- `refuse_connections`: the request is answered normally, and the server stops listening
  for `refuse_s` seconds (connections are refused); a response that ends while it is not
  listening closes its connection (`Connection: close`), as a server shutting down
  gracefully does, so its client has to connect again.

Mid-stream, after `fault_token_index(max_tokens)` content tokens:

- `disconnect`: the connection is closed without the end of the stream.
- `stall`: no chunk for `stall_s` seconds, then the stream goes on.
- `malformed_chunk`: one event is cut-off JSON; the stream then goes on.
- `error_in_stream`: an `{"error": ...}` event, then `data: [DONE]`.
- `huge_chunk`: one extra event carrying `huge_chunk_bytes` bytes of text on one line.
- `utf8_split`: one extra event whose text holds multi-byte UTF-8 characters, written as
  two HTTP chunks a millisecond apart, split inside a character (not a fault for a
  correct client: it must join the bytes before decoding).

At the end of a stream:

- `never_ending`: tokens keep coming past `max_tokens`, without a finish reason, until
  the client goes away.
- `no_done`: the stream ends after its final chunk (finish reason) and usage chunk, but
  without `data: [DONE]` (complete: a correct client counts it as a success).

Without streaming, `disconnect` closes the connection before the response, `stall`
delays it, `malformed_chunk` truncates its JSON, `error_in_stream` becomes a 500 error
body and `never_ending` trickles whitespace into a body that never ends; `huge_chunk`,
`utf8_split` and `no_done` are SSE faults that change nothing there (not injected).

A fault is counted (`kvswarm_sim_faults_injected_total{kind}`) and, with `--fault-log
PATH`, logged as one JSON line when it is injected: `request_id` (the request's
`X-Request-Id`), `fault`, `unix_s` (wall clock) and, where they apply, `status` and
`retry_after_s`. Each time the server listens again after `refuse_connections`, a line
with `fault: "not_listening"`, `request_id: null`, `from_unix_s` and `until_unix_s` says
when connections were refused.

Separately, `slow_start_s > 0` makes the stack slow when it starts: for requests arriving
in its first `slow_start_s` seconds, prefill and decode times are multiplied by a factor
falling linearly from `slow_start_factor` to 1; such requests count as `slow_start`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from kvswarm.errors import KvswarmError
from kvswarm.sim.jsonlines import JsonLines, read_json_lines
from kvswarm.sim.knobs import check_knobs, knob

FaultKind = Literal[
    "error",
    "rate_limited",
    "unavailable",
    "disconnect_before_head",
    "not_sse",
    "stall_first_token",
    "refuse_connections",
    "disconnect",
    "stall",
    "malformed_chunk",
    "error_in_stream",
    "huge_chunk",
    "utf8_split",
    "never_ending",
    "no_done",
]
RANDOM_FAULTS: tuple[FaultKind, ...] = get_args(FaultKind)
SLOW_START = "slow_start"
NOT_LISTENING = "not_listening"
ALL_FAULT_KINDS: tuple[str, ...] = (*RANDOM_FAULTS, SLOW_START)


def _rate(what: str) -> Any:
    return knob(0.0, f"share of requests {what}", ge=0, le=1)


@dataclass(frozen=True)
class FaultConfig:
    """Rates (0-1 per request) and shapes of injected faults; all off by default."""

    error_rate: float = _rate("answered with --fault-error-status")
    error_status: int = knob(500, "HTTP status of injected errors", ge=400, le=599)
    rate_limited_rate: float = _rate("answered with 429 Too Many Requests")
    unavailable_rate: float = _rate("answered with 503 Service Unavailable")
    retry_after_share: float = knob(
        0.5, "share of 429 and 503 answers that carry Retry-After", ge=0, le=1
    )
    retry_after_s: int = knob(1, "seconds in an injected Retry-After header", ge=0)
    disconnect_before_head_rate: float = _rate("closed after reading them, with no response")
    not_sse_rate: float = _rate("answered with status 200 and an HTML page")
    stall_first_token_rate: float = _rate("that stall before their first token")
    refuse_connections_rate: float = _rate(
        "after which the server stops listening for --fault-refuse-s"
    )
    refuse_s: float = knob(1.0, "seconds the server refuses connections after such a request", ge=0)
    disconnect_rate: float = _rate("disconnected mid-stream")
    stall_rate: float = _rate("that stall mid-stream")
    stall_s: float = knob(5.0, "seconds without a chunk in a stall (either kind)", ge=0)
    malformed_chunk_rate: float = _rate("with one malformed chunk mid-stream")
    error_in_stream_rate: float = _rate("ending with an error object mid-stream")
    huge_chunk_rate: float = _rate("with one huge event mid-stream")
    huge_chunk_bytes: int = knob(4 * 1024 * 1024, "bytes of text in a huge event", ge=1)
    utf8_split_rate: float = _rate("with an event split inside a UTF-8 character")
    never_ending_rate: float = _rate("whose stream never ends")
    no_done_rate: float = _rate("whose stream ends without data: [DONE]")
    slow_start_s: float = knob(0.0, "seconds after start during which the stack is slow", ge=0)
    slow_start_factor: float = knob(5.0, "slowdown at start, falling linearly to 1", ge=1)
    log: str | None = knob(
        None,
        "append one JSON line per injected fault to this file (request id, fault)",
        type=str,
        metavar="PATH",
    )

    def __post_init__(self) -> None:
        check_knobs(self, prefix="fault-")
        if sum(self.rates()) > 1.0 + 1e-9:
            raise KvswarmError(
                f"fault rates add up to {sum(self.rates()):g}; they must add up to at most 1"
            )

    def rates(self) -> tuple[float, ...]:
        """The rate of each kind in RANDOM_FAULTS, in that order."""
        return tuple(getattr(self, f"{kind}_rate") for kind in RANDOM_FAULTS)


def fault_token_index(max_tokens: int) -> int:
    """How many content tokens are written before a mid-stream fault (at least one)."""
    return max(1, max_tokens // 2)


@dataclass(frozen=True, slots=True)
class Draw:
    """One request's fault, and whether a 429/503 carries Retry-After."""

    kind: FaultKind
    retry_after: bool = False


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

    def draw(self) -> Draw | None:
        """The random fault of the next request, or None."""
        if not self._bounds:
            return None
        value = self._rng.random()
        for bound, kind in self._bounds:
            if value < bound:
                if kind in ("rate_limited", "unavailable"):
                    return Draw(kind, self._rng.random() < self.config.retry_after_share)
                return Draw(kind)
        return None

    def slowdown(self, now_s: float) -> float:
        """The factor applied to a request arriving at `now_s` (1.0 outside slow start)."""
        window = self.config.slow_start_s
        elapsed = now_s - self._started_s
        if window <= 0 or elapsed >= window:
            return 1.0
        return 1.0 + (self.config.slow_start_factor - 1.0) * (1.0 - max(0.0, elapsed) / window)


class FaultLog:
    """Appends one JSON line per injected fault (and per refusal window), flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self._lines = JsonLines(path, "--fault-log")
        self.path = self._lines.path

    def injected(self, request_id: str, fault: str, **details: Any) -> None:
        self._lines.write(
            {"request_id": request_id, "fault": fault, "unix_s": time.time(), **details}
        )

    def not_listening(self, from_unix_s: float, until_unix_s: float) -> None:
        self._lines.write(
            {
                "request_id": None,
                "fault": NOT_LISTENING,
                "from_unix_s": from_unix_s,
                "until_unix_s": until_unix_s,
            }
        )

    def close(self) -> None:
        self._lines.close()


def read_fault_log(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a fault log, in the order they were written."""
    return read_json_lines(path)
