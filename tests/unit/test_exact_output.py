"""A trace row asks for exactly its output_length: max_tokens, ignore_eos, and min_tokens
where the engine takes it; run.json's replay section says which were sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from locust import task
from locust.env import Environment

from kvswarm.client import CompletionRequest, StreamResult
from kvswarm.engines import engine_profile
from kvswarm.locust.plugin import KvswarmPlugin
from kvswarm.locust.users import LLMUser


class OneUser(LLMUser):
    @task
    def ask(self) -> None:  # not run: the test calls send itself
        pass


def sent_request(tmp_path: Path, engine: str, *, exact_output: bool) -> CompletionRequest:
    environment = Environment(user_classes=[OneUser])
    environment.create_local_runner()
    plugin = KvswarmPlugin.recording(environment, tmp_path)
    plugin.engine = engine_profile(engine)
    user = OneUser(environment)
    sent: list[CompletionRequest] = []

    def complete(request: CompletionRequest, *_args: Any) -> StreamResult:
        sent.append(request)
        return StreamResult(text="ok")

    user.llm.complete = complete  # type: ignore[method-assign]
    user.send(prompt="hi", messages=[{"role": "user", "content": "hi"}], max_tokens=37,
              exact_output=exact_output)  # fmt: skip
    (request,) = sent
    return request


@pytest.mark.parametrize("engine", ["vllm", "sglang", "sim"])
def test_an_exact_length_carries_min_tokens_where_the_engine_takes_it(
    tmp_path: Path, engine: str
) -> None:
    request = sent_request(tmp_path, engine, exact_output=True)
    assert request.max_tokens == 37
    assert request.extra["min_tokens"] == 37 and request.extra["ignore_eos"] is True


@pytest.mark.parametrize("engine", ["llama.cpp", "openai"])
def test_other_engines_get_max_tokens_and_ignore_eos_only(tmp_path: Path, engine: str) -> None:
    request = sent_request(tmp_path, engine, exact_output=True)
    assert "min_tokens" not in request.extra and request.extra["ignore_eos"] is True


def test_a_length_that_is_a_cap_has_no_min_tokens(tmp_path: Path) -> None:
    assert "min_tokens" not in sent_request(tmp_path, "vllm", exact_output=False).extra
