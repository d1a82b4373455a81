"""Requests made of a shared prefix from a pool and a unique part: the shape of three scenarios.

A request is `prefix + "\\n\\n" + unique`. The unique part starts with the request's tag, so
it differs from every other request right after the shared prefix. When the schedule wants a
hit, the prefix is a pool item the fleet has already sent; when it wants a miss, it is the
first use of a pool item nobody has sent yet, or, once every item has been sent, a pool item
preceded by the tag, so the request is unique from its first tokens (`prefix_id` ''). See
`kvswarm.workloads.reuse.choose_prefix`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from kvswarm.config import ScenarioConfig
from kvswarm.errors import ConfigError
from kvswarm.textparts import JoinedText, SharedText, Text
from kvswarm.tokens import Fitted
from kvswarm.workloads.pool import PoolItem, PrefixPool, TextGenerator
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.reuse import choose_prefix
from kvswarm.workloads.workload import TAG_START, RequestIdentity, Workload, WorkloadContext

# What follows a shared prefix in a prime request (one token is asked for).
PRIME_QUESTION = "Reply with one word."

SEPARATOR = "\n\n"


class PrefixWorkload(Workload):
    """A scenario of pool prefixes + unique parts; subclasses name their text generators.

    `layout` "user": one user message holding prefix and unique part (question answering
    over a document); "system": the prefix as the system message, the unique part as the
    user message (an assistant primed with a codebase or an instruction template).
    """

    family: ClassVar[str]
    shared_text: ClassVar[TextGenerator]
    unique_text: ClassVar[TextGenerator]
    layout: ClassVar[Literal["user", "system"]] = "user"

    def __init__(self, context: WorkloadContext) -> None:
        super().__init__(context)
        self.pool: PrefixPool = self.material.pool(
            context.scenario, self.family, type(self).shared_text, self.config, context.seed
        )
        # between the end of a prefix and a tag, and between a tag and a prefix
        self._separator_tokens = self.material.joint_tokens(SEPARATOR, "end.", TAG_START)
        self._salt_separator_tokens = self.material.joint_tokens(SEPARATOR, "]", "Read")

    @classmethod
    def check_shape(cls, scenario: str, config: ScenarioConfig, tag_tokens: int) -> None:
        if config.shared_tokens_max <= 0:
            raise ConfigError(
                f"scenarios.{scenario}.shared_tokens_max: must be > 0 for a scenario of "
                f"shared prefixes, got {config.shared_tokens_max}"
            )

    @classmethod
    def prompt_bound(cls, config: ScenarioConfig, tag_tokens: int) -> tuple[int, str]:
        # tag + separator before a missed prefix, the prefix, a separator, the unique part
        longest = tag_tokens + 2 + config.shared_tokens_max + 2 + config.unique_tokens
        if config.unique_tokens > config.shared_tokens_max:
            return longest, "unique_tokens"
        return longest, "shared_tokens_max"

    def prepare(self) -> None:
        self.pool.prepare()

    def prime_requests(self) -> list[PromptRequest]:
        question = Fitted(PRIME_QUESTION, self.fitter.count(PRIME_QUESTION, "tag"))
        requests = []
        for index in range(len(self.pool)):
            item = self.pool.item(index)
            identity = RequestIdentity(f"prime/{item.prefix_id}", "", self._rng)
            requests.append(self._request(identity, item, question, salt=""))
        return requests

    def _next(self) -> PromptRequest:
        identity = self._identity()
        item, bare = choose_prefix(
            self.pool,
            self.material.seen,
            self._rng,
            want_hit=self._schedule.want_hit(),
            ratio=self.config.reuse_ratio,
        )
        unique = self._unique_text(identity, type(self).unique_text, self.config.unique_tokens)
        if bare:
            # Provisional: `count_sent` settles whether this is the item's first use.
            return self._request(
                identity, item, unique, salt="", expected_hit=item.prefix_id in self.material.seen
            )
        return self._request(identity, item, unique, salt=identity.tag)

    def _request(
        self,
        identity: RequestIdentity,
        item: PoolItem,
        unique: Fitted,
        *,
        salt: str,
        expected_hit: bool = False,
    ) -> PromptRequest:
        salt_tokens = self.fitter.count(salt, "tag") + self._salt_separator_tokens if salt else 0
        # In parts, never joined: a long context is 100-200 kB, and the pool item's text
        # goes out as the one encoding of it (kvswarm.textparts), not as a copy per request.
        head: tuple[str | SharedText, ...] = (
            (salt + SEPARATOR, item.shared) if salt else (item.shared,)
        )
        prompt = JoinedText((*head, SEPARATOR + unique.text))
        if self.layout == "user":
            messages: tuple[dict[str, Text], ...] = ({"role": "user", "content": prompt},)
        else:
            messages = (
                {"role": "system", "content": JoinedText(head)},
                {"role": "user", "content": unique.text},
            )
        fixed = salt_tokens + self._separator_tokens
        return PromptRequest(
            scenario=self.context.scenario,
            request_id=identity.request_id,
            messages=messages,
            prompt=prompt,
            max_tokens=self.context.max_tokens,
            prefix_id="" if salt else item.prefix_id,
            pool_prefix=not salt,
            prefix_tokens=0 if salt else item.tokens,
            expected_hit=expected_hit,
            prompt_tokens_target=fixed + item.target_tokens + self.config.unique_tokens,
            prompt_tokens_sized=fixed + item.tokens + unique.tokens,
        )
