"""Per-request reporting: every finished request is kept and reported to Locust's stats.

A request's record goes to the run (appended to requests.csv, or on a worker shipped to
the master) and becomes Locust request events: one `LLM` event (response time = E2E,
length = output tokens), `TTFT`, `TPOT`, and one `ITL` per inter-token gap, all named by
scenario, so they appear in the web UI, the headless tables and `--csv` files.

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

__all__ = ["MAX_PENDING_REPORTS", "MAX_REPORT_DELAY_S", "REQUEST_TYPE", "Recorder"]

REQUEST_TYPE = "LLM"
MAX_PENDING_REPORTS = 64
MAX_REPORT_DELAY_S = 0.5


class Recorder:
    """Keeps records (through `keep`) and fires their Locust request events."""

    def __init__(self, environment: Environment, keep: Callable[[RequestRecord], None]) -> None:
        self.environment = environment
        self.keep = keep
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
        """Keep a request and fire its Locust events (LLM, TTFT, TPOT, one ITL per gap).

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
        timings = [(REQUEST_TYPE, request.e2e_s)]
        if request.ttft_s is not None:
            timings.append(("TTFT", request.ttft_s))
        if request.tpot_s is not None:
            timings.append(("TPOT", request.tpot_s))
        timings.extend(("ITL", gap) for gap in request.itl_s)
        for request_type, seconds in timings:
            fire(
                request_type=request_type,
                name=name,
                response_time=(seconds or 0.0) * 1000.0,
                # Only the request itself has a length: its output tokens.
                response_length=request.output_tokens if request_type == REQUEST_TYPE else 0,
                exception=None,
                context=context,
            )
