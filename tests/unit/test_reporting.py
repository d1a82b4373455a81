"""Deferred reporting: records reach the run and Locust's stats, and never pile up."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import gevent
import pytest
from locust.argument_parser import parse_options
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
    assert stats.get("s", "ITL").num_requests == 1  # --kv-itl-events mean


def itl_events(tmp_path: Path, mode: str) -> list[float]:
    """The ITL response times (ms) Locust's request event got for one 4-gap record."""
    environment, plugin = plugin_for(tmp_path)
    plugin.recorder.itl_events = mode
    seen: list[float] = []

    def on_request(request_type: str, response_time: float, **_kwargs: object) -> None:
        if request_type == "ITL":
            seen.append(response_time)

    environment.events.request.add_listener(on_request)
    gapped = dataclasses.replace(record(0), output_tokens=5, itl_s=(0.01, 0.02, 0.03, 0.02))
    plugin.recorder.report_now(gapped)
    return seen


def test_itl_events_every_fires_one_event_per_gap(tmp_path: Path) -> None:
    assert itl_events(tmp_path, "every") == pytest.approx([10.0, 20.0, 30.0, 20.0])


def test_itl_events_mean_fires_one_event_per_request_with_its_mean_gap(tmp_path: Path) -> None:
    assert itl_events(tmp_path, "mean") == pytest.approx([20.0])


def test_itl_events_none_fires_no_itl_event(tmp_path: Path) -> None:
    assert itl_events(tmp_path, "none") == []


def test_nothing_feeds_the_live_view_in_a_headless_run(tmp_path: Path) -> None:
    _environment, plugin = plugin_for(tmp_path)
    plugin.attach()  # no web UI: headless
    plugin.recorder.report_now(record(0))
    assert plugin.live is None
    assert plugin.events.record_kept._handlers == []


def test_the_web_ui_attaches_the_live_view_as_a_record_kept_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment, plugin = plugin_for(tmp_path)
    monkeypatch.setattr(sys, "argv", ["locust"])  # the web UI parses the command line
    environment.parsed_options = parse_options([])
    environment.create_web_ui("127.0.0.1", 0, delayed_start=True)  # never served
    plugin.attach()
    plugin.recorder.report_now(record(0))
    assert plugin.live is not None and plugin.live.requests == 1
    percentiles = plugin.live.percentiles_ms()["s"]
    assert percentiles["itl"]["count"] == 1  # one mean gap per request, not one per gap


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
