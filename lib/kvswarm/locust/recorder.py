"""Per-request reporting: every finished request is kept and reported to Locust's stats.

A request's record goes to the run (appended to requests.csv, or on a worker shipped to
the master) and becomes Locust request events named by scenario, so they appear in the
web UI, the headless tables and `--csv` files: one `LLM` event (response time = E2E,
length = output tokens), `TTFT`, `TPOT`, and `ITL` events as `--kv-itl-events` says
(`ITL_EVENTS`): `mean`, the default, one per request carrying the request's mean
inter-token gap; `every`, one per gap; `none`. So by default a request costs four events
whatever its length, and Locust's request counts stay close to requests (with `every`,
its RPS counts every gap as a request). The exact gaps are in requests.csv either way,
and kvswarm's own percentiles are computed from them.

The work is deferred to a reporter greenlet that handles one request each time the event
loop is idle: when many requests end at once, their bookkeeping would otherwise delay the
receive timestamps of other users' tokens. A loop that is never idle (a saturated load
generator) must not hold records back: once `MAX_PENDING_REPORTS` are waiting, or the
oldest has waited `MAX_REPORT_DELAY_S`, the caller handles them all at once. Everything
pending is handled before the test's results are closed (`drain`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from locust.env import Environment

from kvswarm.records import RequestRecord

__all__ = [
    "ITL_EVENTS",
    "MAX_PENDING_REPORTS",
    "MAX_REPORT_DELAY_S",
    "REQUEST_TYPE",
    "Recorder",
]

REQUEST_TYPE = "LLM"
MAX_PENDING_REPORTS = 64
MAX_REPORT_DELAY_S = 0.5
# What `--kv-itl-events` may say: Locust ITL events per request.
ITL_EVENTS = ("mean", "every", "none")


class Recorder:
    """Keeps records (through `keep`) and fires their Locust request events.

    `itl_events` is one of `ITL_EVENTS`; the plugin sets it from `--kv-itl-events` when
    a test starts."""

    def __init__(
        self,
        environment: Environment,
        keep: Callable[[RequestRecord], None],
        itl_events: str = "mean",
    ) -> None:
        self.environment = environment
        self.keep = keep
        self.itl_events = itl_events
        self.pending: deque[RequestRecord] = deque()
        self._oldest_pending_t = 0.0
        self._reporter: Any = None

    def report(self, request: RequestRecord) -> None:
        """Keep a finished request and report it to Locust, deferred (see module doc)."""
        pending = self.pending
        if not pending:
            self._oldest_pending_t = time.monotonic()
        pending.append(request)
        if (
            len(pending) >= MAX_PENDING_REPORTS
            or time.monotonic() - self._oldest_pending_t >= MAX_REPORT_DELAY_S
        ):
            self.drain()
        elif self._reporter is None:
            self._reporter = gevent.spawn(self._report_when_idle)

    def record(self, request: RequestRecord) -> None:
        """Keep a record without reporting it to Locust (a request the test cancelled)."""
        self.keep(request)

    def drain(self) -> None:
        """Handle every deferred report now (at test stop, before results are closed)."""
        while self.pending:
            self.report_now(self.pending.popleft())

    def _report_when_idle(self) -> None:
        try:
            while self.pending:
                gevent.idle()
                if self.pending:
                    self.report_now(self.pending.popleft())
                    self._oldest_pending_t = time.monotonic()
        finally:
            self._reporter = None

    def report_now(self, request: RequestRecord) -> None:
        """Keep a request and fire its Locust events (LLM, TTFT, TPOT, ITL as configured).

        Cancelled requests (the test stopped them) are kept but not reported to Locust.
        """
        self.keep(request)
        if request.cancelled:
            return
        fire = self.environment.events.request.fire
        name = request.scenario
        if not request.ok:
            fire(
                request_type=REQUEST_TYPE,
                name=name,
                response_time=(request.e2e_s or 0.0) * 1000.0,
                response_length=0,
                exception=request.failure,
                context={"request_id": request.request_id, "error": request.error},
            )
            return
        context = {"request_id": request.request_id}
        fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(request.e2e_s or 0.0) * 1000.0,
            # Only the request itself has a length: its output tokens.
            response_length=request.output_tokens,
            exception=None,
            context=context,
        )
        timings: list[tuple[str, float]] = []
        if request.ttft_s is not None:
            timings.append(("TTFT", request.ttft_s))
        if request.tpot_s is not None:
            timings.append(("TPOT", request.tpot_s))
        gaps = request.itl_s
        if gaps and self.itl_events == "mean":
            timings.append(("ITL", sum(gaps) / len(gaps)))
        elif gaps and self.itl_events == "every":
            timings.extend(("ITL", gap) for gap in gaps)
        for request_type, seconds in timings:
            fire(
                request_type=request_type,
                name=name,
                response_time=seconds * 1000.0,
                response_length=0,
                exception=None,
                context=context,
            )
