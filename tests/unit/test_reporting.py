"""Deferred reporting: records reach the run and Locust's stats, and never pile up."""

from __future__ import annotations

from pathlib import Path

import gevent
from locust.env import Environment

from kvswarm.locust.plugin import KvswarmPlugin
from kvswarm.locust.recorder import MAX_PENDING_REPORTS
from kvswarm.records import RequestRecord


def plugin_for(tmp_path: Path) -> tuple[Environment, KvswarmPlugin]:
    environment = Environment(user_classes=[])
    environment.create_local_runner()
    return environment, KvswarmPlugin.recording(environment, tmp_path)


def record(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", worker_id="w", user_id=1, scenario="s", mode="m",
        endpoint="chat", streamed=True, start_unix_s=0.0, ok=True, output_tokens=3,
        ttft_s=0.05, tpot_s=0.01, e2e_s=0.07, itl_s=(0.01, 0.01),
    )  # fmt: skip


def test_reports_wait_for_an_idle_loop_then_reach_run_and_stats(tmp_path: Path) -> None:
    environment, plugin = plugin_for(tmp_path)
    plugin.recorder.report(record(0))
    assert plugin.run.writer.count == 0  # deferred: nothing done in the caller
    gevent.sleep(0.01)
    assert plugin.run.writer.count == 1
    stats = environment.runner.stats
    assert stats.get("s", "LLM").num_requests == 1
    assert stats.get("s", "TTFT").num_requests == 1
    assert stats.get("s", "ITL").num_requests == 2


def test_a_loop_that_is_never_idle_does_not_hold_records_back(tmp_path: Path) -> None:
    _environment, plugin = plugin_for(tmp_path)
    # No yield at all between reports, as on a saturated load generator.
    for i in range(MAX_PENDING_REPORTS):
        plugin.recorder.report(record(i))
    assert len(plugin.recorder.pending) == 0
    assert plugin.run.writer.count == MAX_PENDING_REPORTS


def test_drain_handles_everything_pending(tmp_path: Path) -> None:
    _environment, plugin = plugin_for(tmp_path)
    for i in range(5):
        plugin.recorder.report(record(i))
    plugin.recorder.drain()
    assert plugin.run.writer.count == 5 and not plugin.recorder.pending


def test_every_kept_record_fires_record_kept(tmp_path: Path) -> None:
    _environment, plugin = plugin_for(tmp_path)
    seen: list[str] = []
    plugin.events.record_kept.add_listener(lambda record: seen.append(record.request_id))
    for i in range(3):
        plugin.recorder.report(record(i))
    plugin.recorder.drain()
    assert seen == ["r0", "r1", "r2"]


def test_every_glue_module_can_be_imported_first() -> None:
    """A locustfile may import any of them first (the plugin and the scenario classes
    import each other)."""
    import subprocess
    import sys

    for module in ("scenarios", "users", "plugin", "entry", "recorder", "shipping", "options"):
        completed = subprocess.run(
            [sys.executable, "-c", f"import kvswarm.locust.{module}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, (module, completed.stderr[-2000:])
