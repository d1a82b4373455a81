"""The workload of one simulated user: the base class every scenario implements."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from kvswarm.config import ScenarioConfig
from kvswarm.errors import ConfigError
from kvswarm.tokens import Fitted, LengthStats, LengthSummary
from kvswarm.workloads.pool import SharedMaterial, TextGenerator
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.reuse import ReuseSchedule
from kvswarm.workloads.text import seeded

__all__ = [
    "CHAT_TEMPLATE_ALLOWANCE",
    "RequestIdentity",
    "Workload",
    "WorkloadContext",
    "WorkloadStats",
    "WorkloadSummary",
    "merge_stats",
    "tag_tokens_bound",
]

# Tokens a chat template may add around the messages, kept free in the context window.
CHAT_TEMPLATE_ALLOWANCE = 32


@dataclass(frozen=True)
class WorkloadContext:
    """Everything a workload is built from; `max_tokens` is the scenario's effective one.

    `scenario` is the scenario's name (its workload type is `config.type`). `seed` alone
    makes the shared pools; `run_id`, `worker_id` and `user_id` make the unique parts.
    """

    scenario: str
    config: ScenarioConfig
    seed: int
    run_id: str
    worker_id: str
    user_id: int
    max_model_len: int
    max_tokens: int
    material: SharedMaterial


@dataclass(frozen=True)
class RequestIdentity:
    """Who sends a request: the material that makes its unique part unique.

    `tag` leads with a 48-bit digest of (seed, run, scenario, worker, user, counter) spelt
    in 12 consonants (`kqbdmfhjclst`: letters, so a space before it joins its first token the
    same way every time, which keeps token counts additive), so prompts differ within
    their first tokens, from each other and from those of any other run; then it names
    worker, user and counter literally, so no two requests of a run can be equal whatever
    the digests do. `rng` (seeded from the same identity) makes the rest of the unique part.
    """

    request_id: str
    tag: str
    rng: random.Random


@dataclass(frozen=True)
class WorkloadSummary:
    """One scenario's entry in run.json's `workloads` section: designed reuse and prompt sizes.

    - `scenario`, `type`: the scenario's name and its workload type;
    - `requests`: requests the workload handed out, in every process of the run;
    - `expected_hits`: those the design expected to hit (see kvswarm.workloads.reuse);
    - `configured_reuse_ratio`: the scenario's `reuse_ratio`;
    - `realised_reuse_ratio`: `expected_hits / requests` (0 with no requests);
    - `prompt_tokens`: achieved prompt lengths against their targets.
    """

    scenario: str
    type: str
    requests: int
    expected_hits: int
    configured_reuse_ratio: float
    realised_reuse_ratio: float
    prompt_tokens: LengthSummary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkloadSummary:
        """Read a `to_dict()` back (also from run.json files written before `type` existed)."""
        configured = data.get("configured_reuse_ratio", data.get("designed_reuse_ratio"))
        return cls(
            scenario=str(data["scenario"]),
            type=str(data.get("type", data["scenario"])),
            requests=int(data["requests"]),
            expected_hits=int(data["expected_hits"]),
            configured_reuse_ratio=float(configured),
            realised_reuse_ratio=float(data["realised_reuse_ratio"]),
            prompt_tokens=LengthSummary(**data["prompt_tokens"]),
        )


@dataclass
class WorkloadStats:
    """Designed vs realised reuse, and achieved vs target prompt lengths, of some requests.

    One per workload; `merge_stats` merges them per scenario (per process, then across
    workers, shipped as `as_state()` and read back with `from_state`); `summary()` is the
    run.json record.
    """

    scenario: str
    type: str
    configured_reuse_ratio: float
    requests: int = 0
    expected_hits: int = 0
    lengths: LengthStats = field(default_factory=LengthStats)

    @property
    def realised_reuse_ratio(self) -> float:
        return self.expected_hits / self.requests if self.requests else 0.0

    def record(self, request: PromptRequest) -> None:
        self.requests += 1
        self.expected_hits += request.expected_hit
        self.lengths.add(request.prompt_tokens_target, request.prompt_tokens_sized)

    def merge(self, other: WorkloadStats) -> None:
        """Add `other`'s requests (of the same scenario) to these."""
        self.requests += other.requests
        self.expected_hits += other.expected_hits
        self.lengths.merge(other.lengths)

    def summary(self) -> WorkloadSummary:
        return WorkloadSummary(
            scenario=self.scenario,
            type=self.type,
            requests=self.requests,
            expected_hits=self.expected_hits,
            configured_reuse_ratio=self.configured_reuse_ratio,
            realised_reuse_ratio=self.realised_reuse_ratio,
            prompt_tokens=self.lengths.summary(),
        )

    def as_state(self) -> dict[str, Any]:
        """Plain data for a message between processes; `from_state` reads it back."""
        return {
            "scenario": self.scenario,
            "type": self.type,
            "configured_reuse_ratio": self.configured_reuse_ratio,
            "requests": self.requests,
            "expected_hits": self.expected_hits,
            "lengths": self.lengths.as_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> WorkloadStats:
        return cls(
            scenario=state["scenario"],
            type=state["type"],
            configured_reuse_ratio=state["configured_reuse_ratio"],
            requests=state["requests"],
            expected_hits=state["expected_hits"],
            lengths=LengthStats.from_state(state["lengths"]),
        )


def merge_stats(all_stats: Iterable[WorkloadStats]) -> dict[str, WorkloadStats]:
    """Scenario name -> the merge of its stats (new objects; the inputs are left alone)."""
    merged: dict[str, WorkloadStats] = {}
    for stats in all_stats:
        into = merged.get(stats.scenario)
        if into is None:
            into = merged[stats.scenario] = WorkloadStats(
                stats.scenario, stats.type, stats.configured_reuse_ratio
            )
        into.merge(stats)
    return merged


class Workload(ABC):
    """The requests of one simulated user of one scenario. Make them with `make_workload`.

    Call `next_request()` for each request, and `observe_reply()` with the text the server
    streamed back (multi-turn appends it to the conversation; the others ignore it).
    `prepare()` generates the shared pool ahead of time; `stats` accumulates the reuse and
    length accounting of every request handed out.

    A caller that builds requests ahead of sending them (the Locust users do, off the
    timing path) calls `draft_request()`, then `count_sent()` when it sends the draft, so
    `stats` count only requests sent; `next_request()` is the two at once. Drafts come in
    the same order as requests would; when `next_depends_on_reply` is true the next draft
    must wait for `observe_reply` of the last request.
    """

    # The name it is registered under (set by `register_workload`).
    workload_type: ClassVar[str] = ""
    # Whether the next request is made from the reply to the last one (multi-turn).
    next_depends_on_reply: ClassVar[bool] = False
    # Whether each request's max_tokens is a length to generate exactly (a trace's
    # output_length), not a cap.
    exact_output: ClassVar[bool] = False
    # Tokens a reused prefix needs before the server can hit on it (its KV block size,
    # where it reports one); the Locust glue sets it when the test starts.
    min_hit_tokens: int = 0

    def __init__(self, context: WorkloadContext) -> None:
        self.context = context
        self.config = context.config
        self.material = context.material
        self.fitter = context.material.fitter
        self.stats = WorkloadStats(
            context.scenario, context.config.type, context.config.reuse_ratio
        )
        self._counter = 0
        c = context
        self._rng = seeded(c.seed, c.run_id, c.scenario, c.worker_id, c.user_id)
        self._schedule = ReuseSchedule(context.config.reuse_ratio, self._rng)

    @classmethod
    def check(
        cls,
        scenario: str,
        config: ScenarioConfig,
        *,
        tag_tokens: int,
        max_model_len: int,
        max_tokens: int,
    ) -> None:
        """Raise `ConfigError` when this scenario's config is not one it can run
        (`check_shape`) or its prompts cannot fit the context window."""
        cls.check_shape(scenario, config, tag_tokens)
        prompt_tokens, key = cls.prompt_bound(config, tag_tokens)
        needed = prompt_tokens + CHAT_TEMPLATE_ALLOWANCE + max_tokens
        if needed > max_model_len:
            raise ConfigError(
                f"scenarios.{scenario}.{key}: prompts of up to {prompt_tokens} tokens "
                f"+ {CHAT_TEMPLATE_ALLOWANCE} for the chat template + max_tokens {max_tokens} "
                f"= {needed} tokens do not fit max_model_len {max_model_len}"
            )

    @classmethod  # noqa: B027 (a hook: most scenarios have nothing more to check)
    def check_shape(cls, scenario: str, config: ScenarioConfig, tag_tokens: int) -> None:
        """Scenario-specific checks of the config (none by default); raise `ConfigError`."""

    @classmethod
    @abstractmethod
    def prompt_bound(cls, config: ScenarioConfig, tag_tokens: int) -> tuple[int, str]:
        """The longest prompt this config can produce, and the config key that bounds it."""

    def replay_offsets_s(self) -> list[float] | None:
        """A workload on a timeline of its own (a trace): when each of its requests is due,
        in seconds from the replay's start, by position (`request_at`); None (the
        default): requests go when the user is ready."""
        return None

    def request_at(self, position: int) -> PromptRequest:
        """The request at `position` of the timeline (`replay_offsets_s`)."""
        raise NotImplementedError(f"{type(self).__name__} has no timeline")

    def row_index(self, position: int) -> int:
        """Where the request at `position` of the timeline stands in the workload's own
        source (a trace file's row), for requests.csv's `trace_row`."""
        return position

    def prime_requests(self) -> list[PromptRequest]:
        """One request per shared prefix, each prefix as the load sends it followed by a
        short question, for a prime pass (`--kv-prime`) that warms the server's cache
        before the load; none for a workload without shared prefixes (cold start, a
        trace, whose prefixes are its own)."""
        return []

    def next_request(self) -> PromptRequest:
        """The next request of this user, counted as sent."""
        return self.count_sent(self.draft_request())

    def draft_request(self) -> PromptRequest:
        """The next request of this user, not yet counted in `stats` (see the class doc).

        A first use of a shared prefix is announced when the request is drafted. A prefix
        shorter than `min_hit_tokens` (the server's KV block: a shorter prefix cannot be
        cached) is a designed miss."""
        request = self._next()
        if request.expected_hit and request.prefix_tokens < self.min_hit_tokens:
            request = dataclasses.replace(request, expected_hit=False)
        self._schedule.record(request.expected_hit)
        return request

    def count_sent(self, request: PromptRequest) -> PromptRequest:
        """Count a drafted request in `stats`: it is being sent. Returns it as sent.

        A request that begins with a pool item as it is (`pool_prefix`) is the item's
        first use — a designed miss — only if no request of the fleet has sent the item
        before this one; settled here, when it is sent, since users draft ahead and two
        drafts of one item may go out in either order."""
        if request.pool_prefix:
            first = self.material.seen.first_use(request.prefix_id)
            hit = not first and request.prefix_tokens >= self.min_hit_tokens
            if hit != request.expected_hit:
                settled = dataclasses.replace(request, expected_hit=hit)
                self._replaced(request, settled)
                request = settled
        self.stats.record(request)
        return request

    def _replaced(self, drafted: PromptRequest, sent: PromptRequest) -> None:  # noqa: B027
        """A hook: `sent` replaces `drafted` (workloads that keep their last request)."""

    def observe_reply(self, request: PromptRequest, reply_text: str) -> None:
        """Hand back the text the server streamed in reply to `request`.

        `request` is the object `next_request` returned. Only scenarios that hold a history
        use it; not calling it, or calling it with empty text, means no reply came.
        """
        return None

    def prepare(self) -> None:
        """Generate the shared material now rather than on first use."""
        return None

    @abstractmethod
    def _next(self) -> PromptRequest: ...

    def _unique_text(
        self,
        identity: RequestIdentity,
        generator: TextGenerator,
        target: int,
        joiner: str = " ",
        *,
        verify: bool = False,
    ) -> Fitted:
        """The request's tag, `joiner`, then text from `generator`: `target` tokens in all.

        The tag is sized on its own (it is denser in tokens than the text after it);
        `verify` as in `TextFitter.fit`.
        """
        tag_tokens = self._tag_tokens(identity, joiner)
        rest = self.fitter.fit(
            generator(identity.rng), target - tag_tokens, generator.__name__, verify=verify
        )
        if not rest.text:
            return Fitted(identity.tag, tag_tokens)
        return Fitted(identity.tag + joiner + rest.text, tag_tokens + rest.tokens)

    def _tag_tokens(self, identity: RequestIdentity, joiner: str) -> int:
        """The request's tag and the `joiner` after it, in tokens."""
        return self.fitter.count(identity.tag, "tag") + self.material.joint_tokens(
            joiner, "]", "Summarise"
        )

    def _identity(self) -> RequestIdentity:
        self._counter += 1
        c = self.context
        request_id = f"{c.worker_id}/{c.user_id}/{self._counter}"
        key = f"{c.seed}\x1f{c.run_id}\x1f{c.scenario}\x1f{request_id}".encode()
        digest = hashlib.blake2b(key, digest_size=6).hexdigest().translate(_CONSONANTS)
        rng = seeded(c.seed, c.run_id, c.scenario, "unique", c.worker_id, c.user_id, self._counter)
        return RequestIdentity(request_id, f"{digest} [{request_id}]", rng)


def tag_tokens_bound(material: SharedMaterial, worker_id: str, user_id: int) -> int:
    """The most tokens this user's tags can take (for the context-window check)."""
    ids = material.fitter.count(f" [{worker_id}/{user_id}/99999999]", "tag bound")
    return ids + 12  # a 12-letter digest is at most one token per letter


# Hex digits to consonants: the digest's spelling in tags.
_CONSONANTS = str.maketrans("0123456789abcdef", "bcdfghjklmnpqrst")
# What a tag looks like to the tokenizer at its start, for counting separators before one.
TAG_START = "kqbdmf"
