"""Scenario user classes, made from the config, and the workload side of a test.

Every scenario in the config (`scenarios.<name>`, with a workload `type`) becomes one
Locust user class, named by `user_class_name` (`cold_start` -> `ColdStartUser`), tagged
with its scenario name, weighted by `weight` (`enabled: false` gives weight 0, which
Locust leaves out). Pick them by class name, in the web UI's class picker, or by tag.

At test start every process that runs users (standalone, each worker) settles how it
sizes prompts in tokens and builds the shared pools once, before any user sends; the
first use of a pool item anywhere in the fleet is announced to every other process
(`PREFIX_MESSAGE`), so it is a designed miss once per fleet, not once per process. At
test end the workload stats of every process (designed and realised reuse, prompt
lengths) reach run.json's `workloads` and `tokens` sections.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from locust import tag, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from kvswarm.client import CompletionRequest, StreamingClient, StreamResult
from kvswarm.config import Config, ScenarioConfig
from kvswarm.errors import KvswarmError
from kvswarm.locust.drafting import Draft, DraftLane
from kvswarm.locust.naming import user_class_name
from kvswarm.locust.users import LLMUser
from kvswarm.priming import prime
from kvswarm.tokens import RatioSizer, SizerChoice, TokenSizer, choose_sizer
from kvswarm.workloads import (
    Workload,
    WorkloadStats,
    make_workload,
    merge_stats,
    shared_material,
    text,
)
from kvswarm.workloads.pool import SharedMaterial
from kvswarm.workloads.request import PromptRequest

if TYPE_CHECKING:
    from kvswarm.locust.plugin import KvswarmPlugin

__all__ = ["ScenarioSetup", "ScenarioUser", "make_user_classes", "scenario_classes"]

WORKLOADS_MESSAGE = "kvswarm_workloads"
PREFIX_MESSAGE = "kvswarm_prefix_used"


class ScenarioUser(LLMUser):
    """A user of one scenario: sends its workload's requests, hands back the replies.

    Prompts are built off the timing path: the next request is drafted while this one
    streams (after the reply, for a workload whose next request is made from it:
    multi-turn), in the process's `DraftLane`: one draft at a time, in the loop's spare
    time, a few kB of text between two waits for the loop to be idle (`TextFitter.pause`),
    so making a 4,000-token unique prompt never holds other users' tokens. The draft is
    the request sent next; it is counted in the workload's stats when it is sent, so a
    draft the test's end leaves unsent is not counted (a first use of a shared prefix is
    announced when drafted).
    """

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.workload: Workload = self.kv.scenarios.new_workload(self.scenario, self.user_id)
        self._config = self.kv.settings.config.scenarios[self.scenario]
        self._drafting: Draft[PromptRequest] | None = None
        # A trace replay's due times, by position (None: requests go when ready).
        self._timeline = self.workload.replay_offsets_s()
        # `turn_gap_s`: this user's next turn is due then (monotonic; 0: not yet drawn).
        self._turn_due_s = 0.0

    def wait_time(self) -> float:
        if self.kv.arrivals is not None or self._timeline is not None or self._turn_gaps:
            return 0.0  # open loop: the schedule says when the next request goes
        return random.uniform(self._config.wait_min_s, self._config.wait_max_s)

    @property
    def _turn_gaps(self) -> bool:
        """Turns on this user's own schedule (`turn_gap_s`), unless the run's arrivals
        (`--kv-arrival`) or a trace's timeline say when requests go."""
        return self._config.turn_gap_s > 0 and self.kv.arrivals is None

    def _next_turn_due(self) -> float:
        """When this user's next turn is due: its first somewhere in the first gap (users
        spread out), then a gap (fixed, or drawn) after the previous one was due."""
        gap = self._config.turn_gap_s
        if not self._turn_due_s:
            self._turn_due_s = time.monotonic() + random.uniform(0.0, gap)
        elif self._config.turn_gap == "exponential":
            self._turn_due_s += random.expovariate(1.0 / gap)
        else:
            self._turn_due_s += gap
        return self._turn_due_s

    def on_stop(self) -> None:
        if self._drafting is not None:
            self.kv.scenarios.drafts.cancel(self._drafting)
            self._drafting = None
        super().on_stop()

    def next_request(self) -> None:
        """Send the workload's next request; a successful reply goes back to it."""
        if self._timeline is not None:
            return self._replay_next(self._timeline)
        workload = self.workload
        request = workload.count_sent(self._take_draft())
        if not workload.next_depends_on_reply:
            self._draft_next()
        due = {"due_s": self._next_turn_due()} if self._turn_gaps else {}
        result = self._send(request, **due)
        if result.ok:
            workload.observe_reply(request, result.text)
        if workload.next_depends_on_reply:
            self._draft_next()

    def _replay_next(self, offsets_s: list[float]) -> None:
        """A trace replay: this process's next row, sent at its time; the user stops when
        every row of this process has gone."""
        slot = self.kv.trace_schedule(self.scenario, offsets_s).take()
        if slot is None:
            raise StopUser()
        position, due_s = slot
        workload = self.workload
        # Built in the lane while the row's time comes (a row's prompt can be 100k tokens).
        drafts = self.kv.scenarios.drafts
        self._drafting = drafts.submit(lambda: workload.request_at(position))
        drafts.wait(self._drafting, due_s)
        request = workload.count_sent(self._take_draft())
        self._send(request, due_s=due_s, trace_row=workload.row_index(position))

    def _send(self, request: PromptRequest, **schedule: Any) -> StreamResult:
        """`send` a workload's request (`schedule`: its due time and trace row, if any)."""
        return self.send(
            messages=request.messages,
            prompt=request.prompt,
            max_tokens=request.max_tokens,
            prefix_id=request.prefix_id,
            prefix_tokens=request.prefix_tokens,
            expected_hit=request.expected_hit,
            exact_output=self.workload.exact_output,
            **schedule,
        )

    def _draft_next(self) -> None:
        self._drafting = self.kv.scenarios.drafts.submit(self.workload.draft_request)

    def _take_draft(self) -> PromptRequest:
        """The drafted next request (waiting for it if it is still being built), or a new
        one for the first request."""
        drafting, self._drafting = self._drafting, None
        if drafting is None:
            return self.workload.draft_request()
        return self.kv.scenarios.drafts.take(drafting)


def _scenario_task(scenario: str) -> Any:
    def run_scenario(user: ScenarioUser) -> None:
        user.next_request()

    run_scenario.__name__ = scenario
    return task(tag(scenario)(run_scenario))


def make_user_classes(config: Config, module: str) -> dict[str, type[ScenarioUser]]:
    """One user class per scenario of `config`, by class name, for a locustfile's globals."""
    classes: dict[str, type[ScenarioUser]] = {}
    for name, scenario in config.scenarios.items():
        class_name = user_class_name(name)
        classes[class_name] = type(
            class_name,
            (ScenarioUser,),
            {
                "__module__": module,
                "__qualname__": class_name,
                "__doc__": _describe(name, scenario),
                "scenario": name,
                "weight": scenario.weight if scenario.enabled else 0,
                name: _scenario_task(name),
            },
        )
    return classes


def _describe(name: str, scenario: ScenarioConfig) -> str:
    shared = (
        f"{scenario.shared_tokens_min}-{scenario.shared_tokens_max}-token shared prefixes "
        f"(pool of {scenario.pool_size}), "
        if scenario.shared_tokens_max
        else ""
    )
    return (
        f"Scenario {name} (type {scenario.type}): {shared}{scenario.unique_tokens}-token "
        f"unique parts, {scenario.reuse_ratio:.0%} reuse."
    )


def scenario_classes(classes: Iterable[type]) -> list[type[ScenarioUser]]:
    """The scenario user classes among `classes`."""
    return [cls for cls in classes if isinstance(cls, type) and issubclass(cls, ScenarioUser)]


class ScenarioSetup:
    """The workload side of one process's tests: sizing, pools, fleet-wide first uses and
    workload stats."""

    def __init__(self, plugin: KvswarmPlugin) -> None:
        self.plugin = plugin
        self.sizer: SizerChoice | None = None
        self.workloads: list[Workload] = []
        self.received: list[dict[str, Any]] = []
        self.sizers: dict[str, dict[str, Any]] = {}
        self.drafts = DraftLane()  # the users' next prompts, built in spare time
        runner = plugin.environment.runner
        if isinstance(runner, MasterRunner):
            runner.register_message(WORKLOADS_MESSAGE, self._on_worker_workloads)
            runner.register_message(PREFIX_MESSAGE, self._relay_first_use)
        elif isinstance(runner, WorkerRunner):
            runner.register_message(PREFIX_MESSAGE, self._on_first_use_elsewhere)

    # -- the checks before any load ---------------------------------------------------

    @staticmethod
    def check_fit(config: Config, classes: Iterable[type]) -> None:
        """A scenario whose prompts + max_tokens cannot fit the context is a config error
        before the test starts, not a stream of 400s later (`ConfigError`)."""
        sizer = RatioSizer(config.tokenizer.chars_per_token)
        for cls in scenario_classes(classes):
            scenario = config.scenarios.get(cls.scenario)
            if scenario is None or not scenario.enabled:
                continue
            _build(config, cls.scenario, sizer=sizer, run_id="check", worker_id="check", user_id=0)

    # -- test lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """At test start on a process that runs users: sizer, pools, first-use hooks."""
        self.workloads = []
        self.received = []
        self.sizers = {}
        plugin = self.plugin
        classes = scenario_classes(plugin.environment.user_classes)
        chosen = plugin.settings.options.run_scenarios
        if isinstance(plugin.environment.runner, WorkerRunner) and chosen:
            classes = [cls for cls in classes if cls.scenario in chosen]
        if isinstance(plugin.environment.runner, MasterRunner) or not classes:
            return
        config = plugin.settings.config
        if isinstance(plugin.environment.runner, WorkerRunner):
            self.check_fit(config, classes)
        missing = [cls.scenario for cls in classes if cls.scenario not in config.scenarios]
        if missing:
            raise KvswarmError(
                f"the config no longer defines scenario(s) {', '.join(missing)}; user classes "
                f"are made from the config the locustfile was loaded with"
            )
        self.sizer = self._choose_sizer()
        material = shared_material(self.sizer.sizer)
        material.seen.clear()  # a test's design starts from nothing sent
        material.fitter.pause = self.drafts.pause
        if isinstance(plugin.environment.runner, WorkerRunner):
            material.seen.on_first_use = self._announce_first_use
        text.sentence_bank()  # ~20 ms, now rather than in a user's first draft
        for cls in classes:
            # Builds the scenario's shared pool now, before any user sends.
            self._build(cls.scenario, user_id=0).prepare()
        if plugin.settings.options.prime:
            self._prime(classes, material)

    def new_workload(self, scenario: str, user_id: int) -> Workload:
        """A user's workload, counted in this process's stats."""
        if self.sizer is None:
            raise KvswarmError("scenario users start only after kvswarm's test_start")
        workload = self._build(scenario, user_id=user_id)
        self.workloads.append(workload)
        return workload

    def ship_stats(self) -> None:
        """On a worker at test stop: this process's stats to the master (before the final
        batch of records, so the master has them when it closes the run)."""
        self.plugin.environment.runner.send_message(
            WORKLOADS_MESSAGE,
            {
                "stats": self._stats_states(),
                "sizer": self._sizing(),
            },
        )

    def sections(self) -> dict[str, Any]:
        """run.json's `workloads`, `tokens` and `seed`, over every process."""
        merged = merge_stats(
            WorkloadStats.from_state(stats) for stats in [*self._stats_states(), *self.received]
        )
        sizers = dict(self.sizers)
        local = self._sizing()
        if local is not None:
            sizers["local"] = local
        return {
            "workloads": {name: stats.summary() for name, stats in sorted(merged.items())},
            "tokens": {"sizing": sizers} if sizers else {},
            "seed": self.plugin.settings.config.seed,
        }

    # -- internals -----------------------------------------------------------------------

    def _sizing(self) -> dict[str, Any] | None:
        """This process's sizer for run.json, and how its cold-start prompts were sized."""
        if self.sizer is None:
            return None
        sizing = self.sizer.as_dict()
        cold_start = shared_material(self.sizer.sizer).bank_sizing()
        if cold_start is not None:
            sizing["cold_start"] = cold_start
        return sizing

    def _build(self, scenario: str, *, user_id: int) -> Workload:
        assert self.sizer is not None
        plugin = self.plugin
        workload = _build(
            plugin.settings.config,
            scenario,
            sizer=self.sizer.sizer,
            run_id=plugin.run_uid,
            worker_id=plugin.worker_id,
            user_id=user_id,
        )
        workload.min_hit_tokens = plugin.block_size or 0
        return workload

    def _prime(self, classes: list[type], material: SharedMaterial) -> None:
        """`--kv-prime`: every shared prefix sent once before this process's users start;
        each primed prefix is then a designed hit from its first use in the load."""
        settings = self.plugin.settings
        requests = [
            request
            for cls in classes
            for request in self._build(cls.scenario, user_id=0).prime_requests()
        ]
        outcome = prime(
            requests,
            settings.base_url,
            endpoint=settings.endpoint,
            model=settings.config.model_name,
            api_key=settings.api_key,
            timeouts=settings.timeouts,
        )
        for prefix_ids in outcome.primed.values():
            for prefix_id in prefix_ids:
                material.seen.mark_seen(prefix_id)
        self.plugin.note_prime(outcome)

    def _stats_states(self) -> list[dict[str, Any]]:
        merged = merge_stats(workload.stats for workload in self.workloads)
        return [stats.as_state() for stats in merged.values()]

    def _choose_sizer(self) -> SizerChoice:
        plugin = self.plugin
        settings = plugin.settings
        base_url = settings.base_url

        def observe(text: str) -> int:
            """Send `text` as a one-token request; the server's usage.prompt_tokens."""
            client = StreamingClient(base_url, api_key=settings.api_key, timeouts=settings.timeouts)
            try:
                result = client.complete(
                    CompletionRequest(
                        endpoint="completions",
                        model=settings.config.model_name,
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
            settings.config.tokenizer,
            base_url=base_url,
            model=settings.config.model_name,
            shape=plugin.engine.tokenize,
            api_key=settings.api_key,
            observe=observe,
        )

    def _announce_first_use(self, prefix_id: str) -> None:
        self.plugin.environment.runner.send_message(PREFIX_MESSAGE, {"prefix_id": prefix_id})

    def _relay_first_use(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        # To every worker, the sender included (it has marked the prefix already).
        environment.runner.send_message(PREFIX_MESSAGE, msg.data)

    def _on_first_use_elsewhere(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        if self.sizer is not None:
            shared_material(self.sizer.sizer).seen.mark_seen(msg.data["prefix_id"])

    def _on_worker_workloads(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        self.received.extend(msg.data.get("stats", []))
        if msg.data.get("sizer"):
            self.sizers[msg.node_id] = msg.data["sizer"]


def _build(
    config: Config,
    scenario: str,
    *,
    sizer: TokenSizer,
    run_id: str,
    worker_id: str,
    user_id: int,
) -> Workload:
    return make_workload(
        scenario,
        config.scenarios[scenario],
        seed=config.seed,
        run_id=run_id,
        worker_id=worker_id,
        user_id=user_id,
        sizer=sizer,
        max_model_len=config.max_model_len,
        max_tokens=config.max_tokens,
    )
