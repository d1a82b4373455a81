"""Next prompts drafted in the event loop's spare time.

A scenario user drafts its next request while its current one streams. Building a
4,000-token unique prompt is about 2 ms of CPU; the text generator hands control back every
few kB (`TextFitter.pause`), but a yield alone is not enough: when 50 users finish together
(their streams keep step), 50 drafts would each run a slice in every turn of the loop, and
the sockets, whose token timestamps are the measurement, would wait ~10 ms for their turn.

So drafts go through one `DraftLane` per process: they build one at a time, and between two
slices the building draft waits for the loop to be idle (`gevent.idle`: no socket or timer
ready), so a token that arrives is timestamped before the next slice runs. A user that
needs its draft before the lane got to it is not left waiting on other users' drafts: a
draft not yet started is built by the user itself, and one under way is finished at full
priority (yielding with `sleep(0)`), since the user's request is now waiting on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.hub import Waiter, get_hub
from gevent.queue import Queue

__all__ = ["Draft", "DraftLane"]

T = TypeVar("T")


class _Cancelled(BaseException):
    """Raised at a pause of a draft whose user stopped: the lane drops it. (Not an
    Exception, so that a build's own `except Exception` lets it through.)"""


class Draft(Generic[T]):
    """One draft in a `DraftLane`: `build()` run by the lane, or by its taker."""

    def __init__(self, build: Callable[[], T]) -> None:
        self.build = build
        self.started = False  # the lane has begun building it
        self.taken = False  # its user asked for it (before or after the lane began)
        self.cancelled = False  # its user stopped: it will not be sent
        # Ready when the lane is through with it: its value, its error, or None if dropped.
        self.result: AsyncResult = AsyncResult()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the lane is through with it; whether it is."""
        self.result.wait(timeout)
        return self.result.ready()


class DraftLane:
    """Builds drafts one at a time in the loop's spare time (see the module doc).

    One greenlet builds every draft, in the order they were submitted: a greenlet per
    draft would cost its creation, a fresh frame stack (an mmap and munmap per request in
    Python 3.11) and a turn at a lock for each of 50 users finishing together."""

    def __init__(self) -> None:
        self._queue: Queue = Queue()
        self._builder: gevent.Greenlet | None = None
        self._building: Draft | None = None
        self._parked: tuple[Waiter, object] | None = None  # the building draft, waiting
        self.built_by_lane = 0  # drafts the lane built (for tests)
        self.built_by_taker = 0  # drafts their user built, the lane not having begun

    def submit(self, build: Callable[[], T]) -> Draft[T]:
        """Queue `build` for the lane; `take` the draft when it is needed."""
        draft: Draft[T] = Draft(build)
        self._queue.put(draft)
        if self._builder is None or self._builder.dead:
            self._builder = gevent.spawn(self._serve)
        return draft

    def take(self, draft: Draft[T]) -> T:
        """The draft's result, waiting for it if it is under way (now at full priority);
        built here and now if the lane has not begun it."""
        draft.taken = True
        if not draft.started:
            self.built_by_taker += 1
            return draft.build()  # the lane skips it when it comes to it
        if self._building is draft and self._parked is not None:
            self._unpark()
        return draft.result.get()

    def wait(self, draft: Draft, until_s: float) -> None:
        """Give the lane until `until_s` (monotonic) to build `draft` (a trace row's
        request, built while its send time comes)."""
        draft.wait(timeout=max(0.0, until_s - time.monotonic()))

    def cancel(self, draft: Draft) -> None:
        """Drop a draft that will not be sent (its user stopped): skipped if queued,
        stopped at its next pause if under way."""
        draft.taken = True
        draft.cancelled = True
        if self._building is draft and self._parked is not None:
            self._unpark()

    def pause(self) -> None:
        """Between two slices of a build: the lane's draft waits for the loop to be idle
        until its user needs it; any other build just yields."""
        building = self._building
        if building is None or gevent.getcurrent() is not self._builder:
            gevent.sleep(0)  # a user building its own draft
        elif building.cancelled:
            raise _Cancelled()
        elif not building.taken:
            self._park()
            if building.cancelled:
                raise _Cancelled()
        else:
            gevent.sleep(0)

    def _park(self) -> None:
        """Wait until the loop is idle, or the draft's user takes it (`_unpark`)."""
        hub = get_hub()
        waiter = Waiter(hub)
        watcher = hub.loop.idle()
        watcher.start(waiter.switch, None)
        self._parked = (waiter, watcher)
        try:
            waiter.get()
        finally:
            self._parked = None
            watcher.stop()
            watcher.close()

    def _unpark(self) -> None:
        assert self._parked is not None
        waiter, watcher = self._parked
        self._parked = None
        watcher.stop()  # type: ignore[attr-defined]
        # A Waiter is switched to from the hub.
        get_hub().loop.run_callback(waiter.switch, None)

    def _serve(self) -> None:
        """The lane's greenlet: build queued drafts, one at a time, for ever."""
        while True:
            draft = self._queue.get()
            if draft.taken:
                continue  # its user built it (or dropped it) while it queued
            self._build(draft)

    def _build(self, draft: Draft) -> None:
        draft.started = True
        self._building = draft
        try:
            self.built_by_lane += 1
            draft.result.set(draft.build())
        except _Cancelled:
            draft.result.set(None)
        except Exception as exc:  # the taker gets it, as if it had built the draft
            draft.result.set_exception(exc)
        finally:
            self._building = None
