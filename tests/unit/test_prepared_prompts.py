"""Scenario users build their next prompt off the timing path, and send that very prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gevent
import pytest
from locust.env import Environment

from kvswarm.client import StreamResult
from kvswarm.config import Config
from kvswarm.locust.plugin import KvswarmPlugin
from kvswarm.locust.scenarios import ScenarioUser, make_user_classes

CLASSES = make_user_classes(Config(), __name__)
REPLY = "Sure, here is the summary you asked for."


class Watched:
    """A scenario user whose sends are faked and whose drafts are watched."""

    def __init__(self, user: ScenarioUser) -> None:
        self.user = user
        self.sending = False
        self.sent: list[str] = []
        self.drafts: list[tuple[str, bool]] = []  # (prompt, drafted while a request streamed)
        draft = user.workload.draft_request

        def watched_draft() -> Any:
            request = draft()
            self.drafts.append((request.prompt, self.sending))
            return request

        user.workload.draft_request = watched_draft  # type: ignore[method-assign]
        user.send = self.send  # type: ignore[method-assign]

    def send(self, *, prompt: str, **_kwargs: Any) -> StreamResult:
        self.sending = True
        self.sent.append(prompt)
        gevent.sleep(0.05)  # the stream: other greenlets run meanwhile
        self.sending = False
        return StreamResult(text=REPLY)


@pytest.fixture
def environment(tmp_path: Path) -> Environment:
    classes = [CLASSES["ColdStartUser"], CLASSES["MultiTurnConversationUser"]]
    environment = Environment(user_classes=classes)
    environment.create_local_runner()
    plugin = KvswarmPlugin.recording(environment, tmp_path)
    plugin.scenarios.start()  # no server: sizes prompts by the configured ratio
    return environment


def test_a_prompt_drafted_while_the_last_request_streams_is_the_one_sent(
    environment: Environment,
) -> None:
    watched = Watched(CLASSES["ColdStartUser"](environment))
    for _ in range(3):
        watched.user.next_request()
    drafted = [prompt for prompt, _ in watched.drafts]
    assert watched.sent == drafted[:3]
    assert [during for _, during in watched.drafts[1:]] == [True, True, True]
    # The draft left unsent is not counted as a request.
    assert watched.user.workload.stats.requests == 3


def test_a_multi_turn_prompt_is_drafted_from_the_reply_after_it_came(
    environment: Environment,
) -> None:
    watched = Watched(CLASSES["MultiTurnConversationUser"](environment))
    for _ in range(3):
        watched.user.next_request()
    assert watched.sent == [prompt for prompt, _ in watched.drafts[:3]]
    assert not any(during for _, during in watched.drafts)
    assert REPLY in watched.sent[1]


def test_stopping_a_user_drops_its_draft(environment: Environment) -> None:
    watched = Watched(CLASSES["ColdStartUser"](environment))
    watched.user.next_request()
    watched.user.on_stop()
    assert watched.user._drafting is None
