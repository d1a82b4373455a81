"""The ground-truth log: what the server did with each request, one JSON line each.

Written by the stack's entry point (the server, or the proxy in PD mode) when a request
ends, so a client's timing can be checked against the server's. Times are seconds of
`time.monotonic()` (CLOCK_MONOTONIC), the clock kvswarm's client reads, so they compare
across processes on one machine. Fields:

- `request_id`: the request's `X-Request-Id` header, else one the server made up.
- `endpoint` (`chat` or `completions`), `stream`, `status` (HTTP status sent),
  `outcome`: `ok`, `fault` (a fault was injected), `client_disconnect` (the client
  closed the connection first) or `bad_request` (rejected, e.g. prompt too long).
- `receipt_s`: when the request's first bytes were read off the socket.
- `first_token_s`: when the socket write of the first chunk carrying generated text
  returned (for a non-streamed response: the write of the whole body); null if none.
- `last_token_s`: the same for the last generated token; null if none.
- `prompt_tokens`, `cached_tokens`, `output_tokens` (tokens actually written).
- `queue_s`, `prefill_s`, `transfer_s` (PD only, else 0), `decode_s`: the phases.
- `fault`: the fault injected (a kind of `kvswarm.sim.faults`), or null if none was (a
  mid-stream fault drawn for a request whose client left first is not injected);
  `slowdown`: the slow-start factor applied (1.0 = none). `status` is 0 for a request
  whose connection was closed before any response.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvswarm.sim.jsonlines import JsonLines, read_json_lines


@dataclass(slots=True)
class RequestTrace:
    """What happened to one request; filled in as it is served, logged when it ends."""

    request_id: str
    endpoint: str
    stream: bool
    receipt_s: float
    status: int = 200
    outcome: str = "ok"
    first_token_s: float | None = None
    last_token_s: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    queue_s: float = 0.0
    prefill_s: float = 0.0
    transfer_s: float = 0.0
    decode_s: float = 0.0
    fault: str | None = None
    slowdown: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GroundTruthLog:
    """Appends one JSON line per request to a file, flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self._lines = JsonLines(path, "--ground-truth")
        self.path = self._lines.path

    def write(self, trace: RequestTrace) -> None:
        self._lines.write(trace.as_dict())

    def close(self) -> None:
        self._lines.close()


def read_ground_truth(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ground-truth log, in the order they were written."""
    return read_json_lines(path)
