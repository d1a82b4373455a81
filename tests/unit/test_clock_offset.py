"""A worker's clock offset to its master: NTP-style pings, the shortest round trip kept."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kvswarm.locust import clock
from kvswarm.locust.clock import ClockOffset, answer_clock_pings


class Runner:
    """Locust's runner, as far as messages go: handlers by type, messages sent."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.sent: list[tuple[str, dict, Any]] = []

    def register_message(self, kind: str, handler: Any) -> None:
        self.handlers[kind] = handler

    def send_message(self, kind: str, data: dict, client_id: Any = None) -> None:
        self.sent.append((kind, data, client_id))

    def deliver(self, kind: str, data: dict, node_id: str = "") -> None:
        self.handlers[kind](None, SimpleNamespace(data=data, node_id=node_id))


def pong(offset: ClockOffset, runner: Runner, sent: float, master: float, now: float,
         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(clock.time, "time", lambda: now)
    runner.deliver(clock.PONG_MESSAGE, {"sent": sent, "master": master})


def test_the_sample_with_the_shortest_round_trip_sets_the_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = Runner()
    offset = ClockOffset(runner)  # type: ignore[arg-type]
    # The master's clock is 5 s ahead; its answer came 3 ms into a 10-ms round trip...
    pong(offset, runner, sent=100.000, master=105.003, now=100.010, monkeypatch=monkeypatch)
    assert offset.offset_s == pytest.approx(4.998)
    # ... then 1 ms into a 2-ms one, the better sample; a slower one later changes nothing.
    pong(offset, runner, sent=200.000, master=205.001, now=200.002, monkeypatch=monkeypatch)
    pong(offset, runner, sent=300.000, master=305.040, now=300.050, monkeypatch=monkeypatch)
    assert (offset.offset_s, offset.rtt_s) == (pytest.approx(5.0), pytest.approx(0.002))
    assert offset.samples == 3


def test_the_masters_times_are_moved_onto_the_workers_clock() -> None:
    offset = ClockOffset(Runner())  # type: ignore[arg-type]
    assert offset.to_local(1000.0) == 1000.0  # no answer yet: taken as the same clock
    offset.offset_s = 5.0
    assert offset.to_local(1000.0) == 995.0
    assert offset.to_local(0.0) == 0.0  # not set stays not set


def test_the_master_answers_a_ping_to_the_worker_that_sent_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = Runner()
    answer_clock_pings(runner)  # type: ignore[arg-type]
    monkeypatch.setattr(clock.time, "time", lambda: 42.0)
    runner.deliver(clock.PING_MESSAGE, {"sent": 7.0}, node_id="worker-1")
    assert runner.sent == [(clock.PONG_MESSAGE, {"sent": 7.0, "master": 42.0}, "worker-1")]
