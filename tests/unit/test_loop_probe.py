"""The load generator checks itself: event-loop lag and CPU per process, and the summary's
warning when they distort timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gevent
import gevent.monkey

from kvswarm.analysis.runs import load_run
from kvswarm.analysis.summary import BOTTLENECK_WARNING, format_summary, summarize
from kvswarm.locust.loopprobe import LoopProbe
from kvswarm.records import RecordWriter
from kvswarm.runrecord import ProcessLoad
from tests.unit.test_records_summary import make

# A sleep that holds the event loop (time.sleep itself may be gevent's).
blocking_sleep = gevent.monkey.get_original("time", "sleep")


def test_a_blocked_loop_is_reported_as_loop_lag() -> None:
    probe = LoopProbe(interval_s=0.01)
    probe.start()
    for _ in range(3):
        gevent.sleep(0.015)
        blocking_sleep(0.03)  # the test hook: no yield for 30 ms
    load = probe.stop("standalone")
    assert load.loop_lag_samples >= 3
    assert load.loop_lag_max_ms >= 15.0
    assert load.distorts_timing


def test_the_window_starts_after_the_warm_up() -> None:
    """A block inside the warm-up is not measured. The block is long (0.5 s) so that a
    busy machine's own scheduling delays cannot be mistaken for it."""
    started = time.monotonic()
    probe = LoopProbe(interval_s=0.01)
    probe.start(warmup_s=0.6)
    gevent.sleep(0.02)
    blocking_sleep(0.5)  # inside the warm-up: not measured
    gevent.sleep(0.2)
    load = probe.stop("standalone")
    elapsed = time.monotonic() - started
    assert load.loop_lag_max_ms < 500.0
    assert 0.0 < load.window_s <= elapsed - 0.5  # the blocked half second is outside it


def run_with_load(tmp_path: Path, load: ProcessLoad) -> Path:
    writer = RecordWriter(tmp_path / "requests.csv")
    writer.extend([make(i) for i in range(3)])
    writer.close()
    meta = {
        "schema_version": 2,
        "run_id": "r",
        "window": {"start_unix_s": 100.0, "end_unix_s": 110.0},
        "load_generator": {"local": load.to_dict()},
    }
    (tmp_path / "run.json").write_text(json.dumps(meta))
    return tmp_path


def summary_of(run_path: Path) -> str:
    run = load_run(run_path)
    return format_summary(summarize(run), str(run_path), run)


def test_a_lagging_load_generator_gets_the_bottleneck_warning(tmp_path: Path) -> None:
    lagging = ProcessLoad(cpu_share=0.3, loop_lag_samples=100, loop_lag_p99_ms=25.0)
    text = summary_of(run_with_load(tmp_path, lagging))
    assert sum(BOTTLENECK_WARNING in line for line in text.splitlines()) == 1
    assert "load generator local (standalone): CPU 30% of a core" in text


def test_a_busy_core_gets_the_bottleneck_warning(tmp_path: Path) -> None:
    busy = ProcessLoad(cpu_share=0.95, loop_lag_samples=100, loop_lag_p99_ms=0.3)
    assert BOTTLENECK_WARNING in summary_of(run_with_load(tmp_path, busy))


def test_a_load_generator_with_room_to_spare_gets_no_warning(tmp_path: Path) -> None:
    calm = ProcessLoad(cpu_share=0.4, loop_lag_samples=100, loop_lag_p99_ms=0.6)
    text = summary_of(run_with_load(tmp_path, calm))
    assert BOTTLENECK_WARNING not in text
    assert "event-loop lag p50 0.00 ms, p99 0.60 ms" in text


def test_a_busy_master_is_reported_but_not_warned_about() -> None:
    master = ProcessLoad(role="master", cpu_share=0.95, loop_lag_p99_ms=20.0)
    assert not master.distorts_timing
