"""Locust as it is before kvswarm's workarounds, for the tests that count what they save."""

from __future__ import annotations

import inspect

import pytest
from locust import User, argument_parser, constant, runners, task


class IdleUser(User):
    """A user that does nothing for a minute: the runners under test need one class."""

    wait_time = constant(60)

    @task
    def idle(self) -> None:
        pass


@pytest.fixture
def unpatched_locust(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locust as it is before `apply_workarounds` (whatever this process imported earlier),
    restored after the test."""
    current = argument_parser.default_args_dict
    monkeypatch.setattr(
        argument_parser, "default_args_dict", getattr(current, "__wrapped__", current)
    )
    monkeypatch.setattr(runners, "inspect", inspect)
