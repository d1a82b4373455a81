"""A real Locust master and worker on loopback: the work a worker does per spawn message.

Locust 2.47's worker rebuilds Locust's whole argument parser once per option in every
spawn message (see `kvswarm.locust.upstream`); with kvswarm's workaround it builds it once
per process. Counted in parser builds, not time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from locust import argument_parser, runners
from locust.env import Environment

from kvswarm.locust.upstream import apply_workarounds
from tests.support.unpatched_locust import IdleUser

CUSTOM_OPTIONS = 60
SPAWN_MESSAGES = 3
READY_TIMEOUT_S = 10.0


def parsed_options_with_custom_options() -> Any:
    """Options as `locust` parses them with a plugin's `CUSTOM_OPTIONS` options registered."""
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)
    for index in range(CUSTOM_OPTIONS):
        parser.add_argument(f"--custom-option-{index}", default=str(index), help="test option")
    return parser.parse_args([])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    with gevent.Timeout(READY_TIMEOUT_S, AssertionError(f"timed out waiting for {what}")):
        while not condition():
            gevent.sleep(0.01)


@pytest.fixture
def master_and_worker() -> Iterator[tuple[runners.MasterRunner, runners.WorkerRunner]]:
    """A master on a free loopback port and one worker connected to it, both in-process."""
    options = parsed_options_with_custom_options()
    master_env = Environment(user_classes=[IdleUser], parsed_options=options)
    master = master_env.create_master_runner("127.0.0.1", 0)
    worker_env = Environment(user_classes=[IdleUser], parsed_options=options)
    worker = worker_env.create_worker_runner("127.0.0.1", master.server.port)
    try:
        wait_until(lambda: len(master.clients.ready) == 1, "the worker to connect")
        yield master, worker
    finally:
        master.quit()
        worker.quit()


def test_worker_builds_locusts_parser_at_most_once_for_all_spawn_messages(
    unpatched_locust: None,
    monkeypatch: pytest.MonkeyPatch,
    master_and_worker: tuple[runners.MasterRunner, runners.WorkerRunner],
) -> None:
    apply_workarounds()
    master, worker = master_and_worker
    spawns, builds = count_spawns_and_builds(monkeypatch, worker)
    for message in range(1, SPAWN_MESSAGES + 1):
        master.start(user_count=message, spawn_rate=100)
        wait_until(lambda message=message: spawns[0] == message, f"spawn message {message}")
    assert builds[0] <= 1


def count_spawns_and_builds(
    monkeypatch: pytest.MonkeyPatch, worker: runners.WorkerRunner
) -> tuple[list[int], list[int]]:
    """Counts the spawn messages `worker` handles and Locust parser builds during them."""
    spawns, builds = [0], [0]
    handle_message = worker.handle_message
    setup_parser_arguments = argument_parser.setup_parser_arguments

    def counting_handle_message(msg: Any) -> None:
        handle_message(msg)
        spawns[0] += msg.type == "spawn"

    def counting_setup(parser: Any) -> None:
        builds[0] += 1
        setup_parser_arguments(parser)

    monkeypatch.setattr(worker, "handle_message", counting_handle_message)
    monkeypatch.setattr(argument_parser, "setup_parser_arguments", counting_setup)
    return spawns, builds
