"""`multi_turn_conversation`: chat users whose history grows turn by turn.

Each user holds one conversation at a time. It opens with a system prompt from the shared
pool of openers (`shared_tokens_min`..`shared_tokens_max` tokens, defaults 1k-2k) and
grows by a user message (`unique_tokens`) and the assistant's real reply per turn
(`observe_reply`). It ends after `max_turns` answered turns, or when the next prompt would
exceed `max_history_tokens`, and a new one starts.

Reuse (default 85%): continuing a conversation extends the history the server has just
seen, an expected hit (`prefix_id` is the conversation id, `prefix_tokens` the history).
A new conversation is a hit only if its opener was seen: when the schedule wants a hit it
opens with an opener the fleet has sent; when it wants a miss the user abandons the
conversation and opens a new one with an opener nobody has sent yet, or once every opener
has been sent, with its tag before an opener, unique from the first token (see
`kvswarm.workloads.reuse.choose_prefix`). So conversation lengths vary, up to `max_turns`.

A turn whose reply never came (`observe_reply` not called, or with empty text) is dropped:
the next request continues from the last answered turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvswarm.config import ScenarioConfig
from kvswarm.errors import ConfigError
from kvswarm.workloads import text
from kvswarm.workloads.registry import register_workload
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.reuse import choose_prefix
from kvswarm.workloads.workload import TAG_START, RequestIdentity, Workload, WorkloadContext

USER = "\n\nUser: "
ASSISTANT = "\n\nAssistant:"
SEPARATOR = "\n\n"
# Tokens the turn markers and the separator after a tag take, with room to spare.
_MARKER_ALLOWANCE = 16


@dataclass
class _Conversation:
    """One conversation's history, as sent so far (through the last answered turn)."""

    conversation_id: str
    messages: list[dict[str, str]]
    prompt: str
    tokens: int
    target_tokens: int
    turns: int = 0
    pending: PromptRequest | None = None


@register_workload(
    "multi_turn_conversation",
    defaults=ScenarioConfig(
        type="multi_turn_conversation",
        reuse_ratio=0.85,
        pool_size=8,
        shared_tokens_min=1000,
        shared_tokens_max=2000,
        unique_tokens=64,
        max_turns=8,
        max_history_tokens=16000,
    ),
)
class MultiTurnWorkload(Workload):
    family = "chat"
    next_depends_on_reply = True

    def __init__(self, context: WorkloadContext) -> None:
        super().__init__(context)
        self.pool = self.material.pool(
            context.scenario, self.family, text.opener, self.config, context.seed
        )
        self._conversation: _Conversation | None = None
        self._conversations = 0
        # the markers as they fall: after a sentence, before a tag or a reply
        self._marker_tokens = self.material.joint_tokens(
            USER, "end.", TAG_START
        ) + self.material.joint_tokens(ASSISTANT, "end.", " Sure")
        self._salt_separator_tokens = self.material.joint_tokens(SEPARATOR, "]", "You")

    @classmethod
    def check_shape(cls, scenario: str, config: ScenarioConfig, tag_tokens: int) -> None:
        if config.shared_tokens_max <= 0:
            raise ConfigError(
                f"scenarios.{scenario}.shared_tokens_max: must be > 0 (conversations open "
                f"with a shared system prompt), got {config.shared_tokens_max}"
            )
        first_turn = tag_tokens + config.shared_tokens_max + _MARKER_ALLOWANCE
        first_turn += config.unique_tokens
        if first_turn > config.max_history_tokens:
            raise ConfigError(
                f"scenarios.{scenario}.max_history_tokens: {config.max_history_tokens} cannot "
                f"hold a first turn of up to {first_turn} tokens (shared_tokens_max "
                f"{config.shared_tokens_max} + unique_tokens {config.unique_tokens} + "
                f"{first_turn - config.shared_tokens_max - config.unique_tokens} for tags "
                "and turn markers)"
            )

    @classmethod
    def prompt_bound(cls, config: ScenarioConfig, tag_tokens: int) -> tuple[int, str]:
        return config.max_history_tokens, "max_history_tokens"

    def prepare(self) -> None:
        self.pool.prepare()

    def observe_reply(self, request: PromptRequest, reply_text: str) -> None:
        """Append the assistant's reply to the conversation, if `request` is its last turn."""
        conversation = self._conversation
        if conversation is None or conversation.pending is not request:
            return
        conversation.pending = None
        if not reply_text.strip():
            return
        reply_tokens = self.fitter.count(reply_text, "reply")
        conversation.messages.append(request.messages[-1])
        conversation.messages.append({"role": "assistant", "content": reply_text})
        conversation.prompt = request.prompt + reply_text
        conversation.tokens = request.prompt_tokens_sized + reply_tokens
        conversation.target_tokens = request.prompt_tokens_target + reply_tokens
        conversation.turns += 1

    def _replaced(self, drafted: PromptRequest, sent: PromptRequest) -> None:
        conversation = self._conversation
        if conversation is not None and conversation.pending is drafted:
            conversation.pending = sent

    def _next(self) -> PromptRequest:
        identity = self._identity()
        want_hit = self._schedule.want_hit()
        conversation = self._conversation
        if conversation is not None and want_hit and self._can_continue(conversation):
            conversation.pending = None
            prefix = (conversation.conversation_id, conversation.tokens)
            return self._turn(conversation, identity, prefix, expected_hit=True)
        return self._open(identity, want_hit)

    def _can_continue(self, conversation: _Conversation) -> bool:
        if conversation.turns >= self.config.max_turns:
            return False
        next_prompt = conversation.tokens + self._marker_tokens + self.config.unique_tokens
        return next_prompt <= self.config.max_history_tokens

    def _open(self, identity: RequestIdentity, want_hit: bool) -> PromptRequest:
        """Start a new conversation and return its first turn."""
        self._conversations += 1
        c = self.context
        conversation_id = f"{c.worker_id}/{c.user_id}/c{self._conversations}"
        item, bare = choose_prefix(
            self.pool,
            self.material.seen,
            self._rng,
            want_hit=want_hit,
            ratio=self.config.reuse_ratio,
        )
        if bare:
            # Provisional: `count_sent` settles whether this is the item's first use.
            expected_hit = item.prefix_id in self.material.seen
            system, salt_tokens, prefix = item.text, 0, (item.prefix_id, item.tokens)
        else:
            expected_hit = False
            system, prefix = identity.tag + SEPARATOR + item.text, ("", 0)
            salt_tokens = self.fitter.count(identity.tag, "tag") + self._salt_separator_tokens
        self._conversation = _Conversation(
            conversation_id=conversation_id,
            messages=[{"role": "system", "content": system}],
            prompt=system,
            tokens=salt_tokens + item.tokens,
            target_tokens=salt_tokens + item.target_tokens,
        )
        return self._turn(self._conversation, identity, prefix, expected_hit=expected_hit)

    def _turn(
        self,
        conversation: _Conversation,
        identity: RequestIdentity,
        prefix: tuple[str, int],
        *,
        expected_hit: bool,
    ) -> PromptRequest:
        user = self._unique_text(identity, text.user_turn, self.config.unique_tokens)
        request = PromptRequest(
            scenario=self.context.scenario,
            request_id=identity.request_id,
            messages=(*conversation.messages, {"role": "user", "content": user.text}),
            prompt=conversation.prompt + USER + user.text + ASSISTANT,
            max_tokens=self.context.max_tokens,
            prefix_id=prefix[0],
            prefix_tokens=prefix[1],
            expected_hit=expected_hit,
            prompt_tokens_target=conversation.target_tokens
            + self._marker_tokens
            + self.config.unique_tokens,
            prompt_tokens_sized=conversation.tokens + self._marker_tokens + user.tokens,
            conversation_id=conversation.conversation_id,
            turn=conversation.turns + 1,
            pool_prefix=conversation.turns == 0 and bool(prefix[0]),
        )
        conversation.pending = request
        return request
