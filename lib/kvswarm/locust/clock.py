"""A worker's wall-clock offset to its master, estimated over Locust's message channel.

A fleet shares one timeline (a trace replay's start, `--kv-steps`, the measured window):
the master fixes it on its own clock and ships it with the spawn message. On other hosts
the clocks differ, by milliseconds under NTP, by seconds without it, which would shift
every worker's rows against the others'. So each worker estimates the offset, NTP-style:
it sends `CLOCK_PINGS` pings with its send time `t0`; the master answers with its own time
`m`; on receipt at `t1`, `m - (t0 + t1) / 2` is the offset and `t1 - t0` the round trip.
The sample with the smallest round trip is kept (its error is at most half of it: the
master read its clock somewhere between `t0` and `t1`), and the master's times are moved
onto the worker's clock by it. run.json records each worker's offset and round trip.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from locust.runners import MasterRunner, WorkerRunner

__all__ = ["CLOCK_PINGS", "ClockOffset", "answer_clock_pings"]

PING_MESSAGE = "kvswarm_clock_ping"
PONG_MESSAGE = "kvswarm_clock_pong"
CLOCK_PINGS = 8
PING_INTERVAL_S = 0.02


def answer_clock_pings(runner: MasterRunner) -> None:
    """On the master: answer every worker's ping with this clock's time."""

    def answer(environment: Any, msg: Any, **_kwargs: Any) -> None:
        reply = {"sent": msg.data["sent"], "master": time.time()}
        runner.send_message(PONG_MESSAGE, reply, client_id=msg.node_id)

    runner.register_message(PING_MESSAGE, answer)


class ClockOffset:
    """On a worker: the best estimate so far of the master's clock minus this one's."""

    def __init__(self, runner: WorkerRunner) -> None:
        self.runner = runner
        self.offset_s: float | None = None  # None: no answer yet (then taken as 0)
        self.rtt_s: float | None = None
        self.samples = 0
        runner.register_message(PONG_MESSAGE, self._on_pong)

    def measure(self, pings: int = CLOCK_PINGS) -> gevent.Greenlet:
        """Send `pings` pings, a little apart, in the background."""

        def ping() -> None:
            for _ in range(pings):
                self.runner.send_message(PING_MESSAGE, {"sent": time.time()})
                gevent.sleep(PING_INTERVAL_S)

        return gevent.spawn(ping)

    def to_local(self, master_unix_s: float) -> float:
        """A time on the master's clock, on this one's (0 stays 0: not set)."""
        if not master_unix_s or self.offset_s is None:
            return master_unix_s
        return master_unix_s - self.offset_s

    def _on_pong(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        received = time.time()
        sent, master = msg.data["sent"], msg.data["master"]
        rtt = received - sent
        self.samples += 1
        if self.rtt_s is None or rtt < self.rtt_s:
            self.rtt_s = rtt
            self.offset_s = master - (sent + received) / 2
