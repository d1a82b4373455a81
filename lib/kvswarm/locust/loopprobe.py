"""A load generator that checks itself: its event loop's lag and its CPU use.

Every Locust process of a test (standalone, master, each worker) runs one `LoopProbe`: a
greenlet that sleeps `PROBE_INTERVAL_S` (a master: `MASTER_PROBE_INTERVAL_S`) and records
how late it woke up, in an HDR histogram. A loop held by other work (a CPU-bound prompt
build, a burst of reporting, a process waiting for a core) wakes it late, and every
stream's receive timestamps are late by as much; so the lag is what the load generator
adds to TTFT and ITL. With the lag the probe reports the process's user+system CPU over
the same window (the measured window: it restarts its counters when the warm-up ends).
run.json's `load_generator` holds one `kvswarm.runrecord.ProcessLoad` per process; the
summary warns when one distorts timing.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import gevent
from hdrh.histogram import HdrHistogram

from kvswarm.runrecord import ProcessLoad

__all__ = ["MASTER_PROBE_INTERVAL_S", "PROBE_INTERVAL_S", "LoopProbe"]

PROBE_INTERVAL_S = 0.05
# A master times no stream: its lag matters at the scale of heartbeats and the run-time
# limit. Waking an idle process costs 0.1-0.2 ms of CPU on the machines measured
# (bench/README.md), so twenty probes a second were most of a master's wake-ups.
MASTER_PROBE_INTERVAL_S = 0.25
_HIGHEST_US = 600_000_000  # ten minutes


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopProbe:
    """Measures this process's event-loop lag and CPU use between `start` and `stop`."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lag_us = HdrHistogram(1, _HIGHEST_US, 3)
        self._greenlets: list[Any] = []
        self._wall0 = time.monotonic()
        self._cpu0 = _cpu_s()

    def start(self, warmup_s: float = 0.0) -> None:
        """Start probing now; the window (lag and CPU) starts after `warmup_s`."""
        self.stop_probing()
        self._restart_window()
        self._greenlets = [gevent.spawn(self._probe)]
        if warmup_s > 0:
            self._greenlets.append(gevent.spawn_later(warmup_s, self._restart_window))

    def stop(self, role: str) -> ProcessLoad:
        """Stop probing; this process's figures over the window."""
        self.stop_probing()
        return self.figures(role)

    def stop_probing(self) -> None:
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self._greenlets = []

    def figures(self, role: str) -> ProcessLoad:
        """The window so far (`role`: standalone, master or worker)."""
        wall_s = time.monotonic() - self._wall0
        cpu_s = _cpu_s() - self._cpu0
        lag = self._lag_us
        samples = lag.get_total_count()

        def ms(percentile: float) -> float:
            return lag.get_value_at_percentile(percentile) / 1000.0 if samples else 0.0

        return ProcessLoad(
            role=role,
            window_s=wall_s,
            cpu_s=cpu_s,
            cpu_share=cpu_s / wall_s if wall_s > 0 else 0.0,
            loop_lag_samples=samples,
            loop_lag_p50_ms=ms(50.0),
            loop_lag_p99_ms=ms(99.0),
            loop_lag_max_ms=lag.get_max_value() / 1000.0 if samples else 0.0,
        )

    def _restart_window(self) -> None:
        self._lag_us.reset()
        self._wall0 = time.monotonic()
        self._cpu0 = _cpu_s()

    def _probe(self) -> None:
        interval = self.interval_s
        record = self._lag_us.record_value
        while True:
            due = time.perf_counter() + interval
            gevent.sleep(interval)
            late_us = int((time.perf_counter() - due) * 1_000_000)
            record(min(max(late_us, 1), _HIGHEST_US))
