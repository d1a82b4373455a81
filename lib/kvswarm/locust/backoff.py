"""`Backoff`: how long a user waits after a request the target could not take.

A target that goes away mid-run should be counted, not hammered: without a wait, a user
whose connection is refused fails thousands of times a second (2,235 `connect` failures
in 4 s from 2 users). After a `connect` failure the user waits 0.1 s, then doubling, up to
`max_s`; after a 429 or 503 that carries `Retry-After`, what the server asked (capped at
`max_s`). Any other outcome resets it. Every request is still recorded: the wait only
spaces them out.
"""

from __future__ import annotations

from kvswarm.client import StreamResult

__all__ = ["Backoff"]

FIRST_WAIT_S = 0.1
_BUSY = frozenset({"http_429", "http_503"})


class Backoff:
    """One user's wait after each request; `max_s` 0 turns it off."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self._last_s = 0.0

    def after(self, result: StreamResult) -> float:
        """Seconds to wait before the next request, given how this one ended."""
        if self.max_s <= 0:
            return 0.0
        if result.failure == "connect":
            self._last_s = min(self.max_s, max(FIRST_WAIT_S, 2 * self._last_s))
            return self._last_s
        self._last_s = 0.0
        if result.failure in _BUSY:
            return min(self.max_s, _retry_after_s(result.headers.get("retry-after")))
        return 0.0


def _retry_after_s(value: str | None) -> float:
    """`Retry-After` in seconds (the delay form; an HTTP date is not waited on)."""
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0
