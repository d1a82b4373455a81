"""The draft lane: users' next prompts built one at a time, in the event loop's spare time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest

from kvswarm.locust.drafting import Draft, DraftLane

SLICE_S = 0.001


def burn(seconds: float) -> None:
    """CPU work that holds the loop, as generating text does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def sliced_build(pause: Callable[[], None], slices: int, log: list[str], name: str) -> str:
    for _ in range(slices):
        log.append(name)
        burn(SLICE_S)
        pause()
    return name


@contextmanager
def busy_loop() -> Iterator[None]:
    """A greenlet that always has more to do, so the loop is never idle."""
    running = True

    def spin() -> None:
        while running:
            gevent.sleep(0)

    spinner = gevent.spawn(spin)
    try:
        yield
    finally:
        running = False
        spinner.join()


def test_drafts_build_one_at_a_time_each_to_the_end() -> None:
    lane = DraftLane()
    log: list[str] = []
    drafts = [lane.submit(lambda n=n: sliced_build(lane.pause, 3, log, n)) for n in "abc"]
    for draft in drafts:
        draft.wait()
    assert log == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert [lane.take(d) for d in drafts] == ["a", "b", "c"]
    assert lane.built_by_lane == 3


def test_a_draft_taken_before_the_lane_began_it_is_built_by_its_user_once() -> None:
    lane = DraftLane()
    log: list[str] = []
    first = lane.submit(lambda: sliced_build(lane.pause, 5, log, "first"))
    second = lane.submit(lambda: sliced_build(lane.pause, 1, log, "second"))
    gevent.sleep(0)  # the lane begins the first; the second queues behind it
    assert lane.take(second) == "second"
    first.wait()
    gevent.sleep(0)  # the lane comes to the second, already built, and skips it
    assert log.count("second") == 1
    assert (lane.built_by_lane, lane.built_by_taker) == (1, 1)


def test_a_draft_waits_for_an_idle_loop_until_its_user_needs_it() -> None:
    lane = DraftLane()
    log: list[str] = []
    with busy_loop():
        draft = lane.submit(lambda: sliced_build(lane.pause, 3, log, "d"))
        gevent.sleep(0.05)
        # The loop was never idle: one slice, then the draft waited.
        assert log == ["d"] and draft.started
        # Taken, it finishes at once, the loop as busy as before.
        assert lane.take(draft) == "d"
    assert log == ["d"] * 3


def test_drafts_in_the_lane_hold_the_loop_for_one_slice_where_spawned_drafts_hold_it_for_many() -> (
    None
):
    def lateness_ms(start_drafts: Callable[[Callable[[], str]], Any]) -> float:
        """The median lateness of a 1-ms timer while 20 drafts of 10 slices build."""
        log: list[str] = []
        late: list[float] = []
        started = [
            start_drafts(lambda n=n: sliced_build(pause, 10, log, str(n))) for n in range(20)
        ]
        while len(log) < 200:
            asked = time.perf_counter()
            gevent.sleep(SLICE_S)
            late.append((time.perf_counter() - asked - SLICE_S) * 1000)
        # Only these greenlets: others of the test session may run for ever.
        for draft in started:
            draft.wait() if isinstance(draft, Draft) else draft.join()
        return statistics.median(late)

    lane = DraftLane()
    pause = lane.pause
    in_lane = lateness_ms(lane.submit)
    pause = lambda: gevent.sleep(0)  # noqa: E731 (each draft in a greenlet of its own)
    spawned = lateness_ms(gevent.spawn)
    assert in_lane * 3 < spawned


def test_one_greenlet_builds_every_draft_of_the_lane() -> None:
    lane = DraftLane()
    builders: list[gevent.Greenlet] = []
    drafts = [lane.submit(lambda: builders.append(gevent.getcurrent())) for _ in range(5)]
    for draft in drafts:
        draft.wait()
    later = lane.submit(lambda: builders.append(gevent.getcurrent()))
    later.wait()
    assert len(builders) == 6 and len(set(map(id, builders))) == 1


def test_a_draft_that_fails_raises_for_its_taker() -> None:
    lane = DraftLane()

    def fail() -> str:
        raise ValueError("no prompt")

    draft = lane.submit(fail)
    after = lane.submit(lambda: "next")
    draft.wait()
    with pytest.raises(ValueError, match="^no prompt$"):
        lane.take(draft)
    assert lane.take(after) == "next"  # the lane goes on


def test_a_cancelled_draft_stops_at_its_next_pause() -> None:
    lane = DraftLane()
    log: list[str] = []
    with busy_loop():
        draft = lane.submit(lambda: sliced_build(lane.pause, 5, log, "d"))
        gevent.sleep(0.02)  # one slice, then it waits for an idle loop
        lane.cancel(draft)
        assert draft.wait(timeout=5)
    assert log == ["d"]
    nxt = lane.submit(lambda: "next")
    assert lane.take(nxt) == "next"
