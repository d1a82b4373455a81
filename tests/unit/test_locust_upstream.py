"""kvswarm's workarounds for Locust work that stalls a process: counted in work, not time."""

from __future__ import annotations

import inspect
import linecache
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from locust import argument_parser, runners
from locust.env import Environment

from kvswarm.locust.upstream import apply_workarounds
from tests.support.unpatched_locust import IdleUser

STACK_DEPTH = 60


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Counts calls to `module.name` (as looked up by callers) in the returned one-item list."""
    calls = [0]
    real = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture
def started_runner() -> Iterator[Callable[[], runners.LocalRunner]]:
    """Makes local runners with one idle user started; quits them all after the test."""
    made: list[runners.LocalRunner] = []

    def start() -> runners.LocalRunner:
        runner = Environment(user_classes=[IdleUser]).create_local_runner()
        made.append(runner)
        runner.start(user_count=1, spawn_rate=1, wait=False)
        return runner

    yield start
    for runner in made:
        runner.quit()


def stop_message(runner: runners.LocalRunner, caplog: pytest.LogCaptureFixture) -> str:
    """The debug line `Runner.stop()` logs about its caller."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="locust.runners"):
        runner.stop()
    (message,) = (m for m in caplog.messages if m.startswith("Stopping all users"))
    return message


def at_depth(depth: int, call: Callable[[], None]) -> None:
    if depth == 0:
        call()
    else:
        at_depth(depth - 1, call)


def test_default_args_dict_builds_locusts_parser_once_per_process(
    unpatched_locust: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_workarounds()
    builds = counting(monkeypatch, argument_parser, "setup_parser_arguments")
    # The worker's spawn handler calls it once per option in the message.
    results = [argument_parser.default_args_dict() for _ in range(100)]
    assert builds[0] == 1
    assert all(result is results[0] for result in results)


def test_cached_default_args_dict_lists_the_same_options(unpatched_locust: None) -> None:
    uncached = argument_parser.default_args_dict()
    apply_workarounds()
    assert argument_parser.default_args_dict() == uncached


def test_stop_reads_no_source_on_a_deep_stack(
    unpatched_locust: None,
    monkeypatch: pytest.MonkeyPatch,
    started_runner: Callable[[], runners.LocalRunner],
) -> None:
    apply_workarounds()
    runner = started_runner()
    source_reads = counting(monkeypatch, linecache, "getlines")
    at_depth(STACK_DEPTH, runner.stop)
    assert runner.state == runners.STATE_STOPPED
    assert source_reads[0] == 0


def test_stop_debug_line_names_the_same_caller_as_before(
    unpatched_locust: None,
    started_runner: Callable[[], runners.LocalRunner],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = stop_message(started_runner(), caplog)
    apply_workarounds()
    assert stop_message(started_runner(), caplog) == before
    assert "(called from " + runners.__file__ in before


def test_applying_twice_changes_nothing(unpatched_locust: None) -> None:
    apply_workarounds()
    patched = (argument_parser.default_args_dict, runners.inspect)
    apply_workarounds()
    assert (argument_parser.default_args_dict, runners.inspect) == patched


def test_runners_still_sees_the_rest_of_inspect(unpatched_locust: None) -> None:
    apply_workarounds()
    assert runners.inspect is not inspect
    assert runners.inspect.isclass is inspect.isclass
    assert runners.inspect.signature is inspect.signature
