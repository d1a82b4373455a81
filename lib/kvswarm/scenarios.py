"""The five scenarios of the original suite as Locust user classes.

Each class is one scenario (`kvswarm.workloads` makes its prompts); pick them by class
name on the command line, in the web UI's class picker (`--class-picker`), or by tag
(`--tags cold_start`). Weights come from `scenarios.<name>.weight` in the config, so
several classes together make a mixed workload; `enabled: false` leaves one out.

At test start every process (standalone, master's workers) settles which engine it
talks to and how it sizes prompts in tokens, then builds the shared pools once, before
any user sends; at test end the designed and realised reuse and the achieved prompt
lengths of every process go to run.json (`workloads`, `tokens`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from locust import tag, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from kvswarm import events as kv_events
from kvswarm.client import CompletionRequest, StreamingClient
from kvswarm.config import SCENARIO_NAMES
from kvswarm.engines import ENGINES, detect_engine
from kvswarm.errors import KvswarmError
from kvswarm.tokens import VLLM_TOKENIZE, RatioSizer, SizerChoice, TokenSizer, choose_sizer
from kvswarm.users import LLMUser
from kvswarm.workloads import Workload, WorkloadStats, make_workload

WORKLOADS_MESSAGE = "kvswarm_workloads"


class ScenarioUser(LLMUser):
    """A user of one scenario: sends its workload's requests, hands back the replies."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        state = _scenario_state(environment)
        self.workload: Workload = state.new_workload(self.kv, self.scenario, self.user_id)

    def wait_time(self) -> float:
        config = self.kv.config.scenarios.get(self.scenario)
        return random.uniform(config.wait_min_s, config.wait_max_s)

    def next_request(self) -> None:
        """Send the workload's next request; a successful reply goes back to it."""
        request = self.workload.next_request()
        result = self.send(
            messages=request.messages,
            prompt=request.prompt,
            max_tokens=request.max_tokens,
            prefix_id=request.prefix_id,
            prefix_tokens=request.prefix_tokens,
            expected_hit=request.expected_hit,
        )
        if result.ok:
            self.workload.observe_reply(request, result.text)


class LongContextHighReuseUser(ScenarioUser):
    """RAG / document analysis: 16k-32k-token documents, 90% of requests reuse one."""

    scenario = "long_context_high_reuse"

    @tag("long_context_high_reuse")
    @task
    def long_context_high_reuse(self) -> None:
        self.next_request()


class CodeGenerationUser(ScenarioUser):
    """Coding assistant: an 8k-token codebase shared by 80% of requests."""

    scenario = "code_generation"

    @tag("code_generation")
    @task
    def code_generation(self) -> None:
        self.next_request()


class MultiTurnConversationUser(ScenarioUser):
    """Chatbot: a conversation whose history grows turn by turn (85% extend a seen one)."""

    scenario = "multi_turn_conversation"

    @tag("multi_turn_conversation")
    @task
    def multi_turn_conversation(self) -> None:
        self.next_request()


class BatchProcessingUser(ScenarioUser):
    """Translation / summarisation: long shared instruction templates, 95% reuse."""

    scenario = "batch_processing"

    @tag("batch_processing")
    @task
    def batch_processing(self) -> None:
        self.next_request()


class ColdStartUser(ScenarioUser):
    """The baseline: every prompt unique from its first token, so nothing can hit."""

    scenario = "cold_start"

    @tag("cold_start")
    @task
    def cold_start(self) -> None:
        self.next_request()


SCENARIO_USERS: dict[str, type[ScenarioUser]] = {
    cls.scenario: cls
    for cls in (
        LongContextHighReuseUser,
        CodeGenerationUser,
        MultiTurnConversationUser,
        BatchProcessingUser,
        ColdStartUser,
    )
}
assert set(SCENARIO_USERS) == set(SCENARIO_NAMES)


class _ScenarioState:
    """Per process: engine, sizer, and every workload made since the test started."""

    def __init__(self) -> None:
        self.engine = "openai"
        self.sizer: SizerChoice | None = None
        self.workloads: list[Workload] = []
        self.received: list[dict[str, Any]] = []
        self.sizers: dict[str, dict[str, Any]] = {}

    def new_workload(self, session: kv_events.Session, scenario: str, user_id: int) -> Workload:
        """A user's workload, counted in this process's stats."""
        if self.sizer is None:
            raise KvswarmError("scenario users start only after kvswarm's test_start")
        workload = _build_workload(session, scenario, sizer=self.sizer.sizer, user_id=user_id)
        self.workloads.append(workload)
        return workload

    def stats_states(self) -> list[dict[str, Any]]:
        """This process's workload stats, one per scenario, as shippable plain data."""
        merged = _merge_by_scenario(workload.stats for workload in self.workloads)
        return [stats.as_state() for stats in merged.values()]


def _build_workload(
    session: kv_events.Session,
    scenario: str,
    *,
    sizer: TokenSizer,
    user_id: int,
    worker_id: str | None = None,
) -> Workload:
    config = session.config
    return make_workload(
        scenario,
        config.scenarios.get(scenario),
        seed=config.seed,
        worker_id=worker_id or session.worker_id,
        user_id=user_id,
        sizer=sizer,
        max_model_len=config.max_model_len,
        max_tokens=config.max_tokens,
    )


def _merge_by_scenario(all_stats: Iterable[WorkloadStats]) -> dict[str, WorkloadStats]:
    merged: dict[str, WorkloadStats] = {}
    for stats in all_stats:
        if stats.scenario not in merged:
            merged[stats.scenario] = WorkloadStats(stats.scenario, stats.designed_reuse_ratio)
        merged[stats.scenario].merge(stats)
    return merged


_states: WeakKeyDictionary[Environment, _ScenarioState] = WeakKeyDictionary()


def _scenario_state(environment: Environment) -> _ScenarioState:
    state = _states.get(environment)
    if state is None:
        state = _states[environment] = _ScenarioState()
    return state


def _scenario_classes(environment: Environment) -> list[type[ScenarioUser]]:
    return [cls for cls in environment.user_classes if issubclass(cls, ScenarioUser)]


@kv_events.events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    session = kv_events.session(environment)
    for cls in SCENARIO_USERS.values():
        config = session.config.scenarios.get(cls.scenario)
        cls.weight = config.weight if config.enabled else 0
    _check_scenarios_fit(environment)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(WORKLOADS_MESSAGE, _on_worker_workloads)


def _check_scenarios_fit(environment: Environment) -> None:
    """A scenario whose prompts + max_tokens cannot fit the context is a config error now,
    not a stream of 400s later."""
    session = kv_events.session(environment)
    config = session.config
    for cls in _scenario_classes(environment):
        if not config.scenarios.get(cls.scenario).enabled:
            continue
        try:
            sizer = RatioSizer(config.tokenizer.chars_per_token)
            _build_workload(session, cls.scenario, sizer=sizer, user_id=0, worker_id="check")
        except KvswarmError as exc:
            where = f"{session.config_path}: " if session.config_path else ""
            kv_events.fail(f"{where}{exc}")


@kv_events.events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        _scenario_state(environment).received = []
        _scenario_state(environment).sizers = {}
        return
    classes = _scenario_classes(environment)
    state = _scenario_state(environment)
    state.workloads = []
    if not classes:
        return
    session = kv_events.session(environment)
    base_url = session.base_url(environment.host)
    state.engine = _engine(session, base_url)
    try:
        state.sizer = _choose_sizer(session, base_url, state.engine)
        for cls in classes:
            # Builds the scenario's shared pool now, before any user sends.
            _build_workload(session, cls.scenario, sizer=state.sizer.sizer, user_id=0).prepare()
    except KvswarmError as exc:
        kv_events.abort(environment, str(exc))


def _engine(session: kv_events.Session, base_url: str) -> str:
    if session.server is not None:
        return session.server.engine  # the results owner has already asked
    configured = session.config.target.engine
    return configured if configured != "auto" else detect_engine(base_url)[0]


def _choose_sizer(session: kv_events.Session, base_url: str, engine: str) -> SizerChoice:
    shape = ENGINES[engine].tokenize or VLLM_TOKENIZE

    def observe(text: str) -> int:
        """Send `text` as a one-token request; the server's usage.prompt_tokens."""
        client = StreamingClient(base_url, api_key=session.api_key, timeouts=session.timeouts)
        try:
            result = client.complete(
                CompletionRequest(
                    endpoint="completions",
                    model=session.config.model_name,
                    max_tokens=1,
                    prompt=text,
                    stream=False,
                )
            )
        finally:
            client.close()
        if result.prompt_tokens is None:
            raise KvswarmError(f"no usage.prompt_tokens in the reply ({result.error})")
        return result.prompt_tokens

    return choose_sizer(
        session.config.tokenizer,
        base_url=base_url,
        model=session.config.model_name,
        shape=shape,
        api_key=session.api_key,
        observe=observe,
    )


@kv_events.events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        state = _scenario_state(environment)
        # Sent before the final batch of records, so the master has it when it closes.
        runner.send_message(
            WORKLOADS_MESSAGE,
            {
                "stats": state.stats_states(),
                "sizer": state.sizer.as_dict() if state.sizer else None,
                "engine": state.engine,
            },
        )


def _on_worker_workloads(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    state = _scenario_state(environment)
    state.received.extend(msg.data.get("stats", []))
    if msg.data.get("sizer"):
        state.sizers[msg.node_id] = msg.data["sizer"]


@kv_events.run_closing.add_listener
def _add_workloads_to_run(environment: Environment, meta: dict[str, Any], **_kwargs: Any) -> None:
    state = _scenario_state(environment)
    merged = _merge_by_scenario(
        WorkloadStats.from_state(stats) for stats in [*state.stats_states(), *state.received]
    )
    if merged:
        meta["workloads"] = {name: stats.as_dict() for name, stats in sorted(merged.items())}
        meta["seed"] = kv_events.session(environment).config.seed
    sizers = dict(state.sizers)
    if state.sizer is not None:
        sizers["local"] = state.sizer.as_dict()
    if sizers:
        meta["tokens"] = {"sizing": sizers}
