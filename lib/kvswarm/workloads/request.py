"""The prompt a workload hands to a User class: what to send, and what the design expects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvswarm.textparts import Text


@dataclass(frozen=True)
class PromptRequest:
    """One request of a scenario, in both API forms, with its reuse accounting.

    `messages` is the chat form (`/v1/chat/completions`), `prompt` the same text flattened
    for `/v1/completions`; send one of them as is (the dicts are not to be mutated). A text
    may be in parts (`kvswarm.textparts`: a long shared prefix is not copied into each
    request); `str(text)` is the whole of it.
    Token counts are in tokens of the served model, as sized by the workload's sizer, and
    count the text only: a chat template adds a few tokens per message on the server.

    - `prefix_id`: the reusable prefix the request begins with: a pool item
      (`doc-2-1a2b3c4d`), or for later turns of a conversation the conversation's id;
      '' when the request is unique from its first tokens (cold start, designed misses).
    - `prefix_tokens`: that prefix's length (0 when `prefix_id` is '').
    - `expected_hit`: whether the design expects the server to hold the prefix already
      (see kvswarm.workloads.reuse for the exact rule).
    - `prompt_tokens_target`: the length the design aimed for; `prompt_tokens_sized`: the
      length achieved as the sizer measured it (exact with a local tokenizer, estimated for
      unique parts with the server's /tokenize or a ratio).
    - `conversation_id`, `turn` (1-based): multi-turn only; '' and 0 otherwise.
    - `pool_prefix`: begins with a pool item as it is (see `Workload.count_sent`).
    """

    scenario: str
    request_id: str
    messages: tuple[Mapping[str, Text], ...]
    prompt: Text
    max_tokens: int
    prefix_id: str = ""
    prefix_tokens: int = 0
    expected_hit: bool = False
    prompt_tokens_target: int = 0
    prompt_tokens_sized: int = 0
    conversation_id: str = ""
    turn: int = 0
    # True when the request begins with a pool item as it is (not salted): whether it is
    # the item's first use (a designed miss) is settled when it is sent, not drafted, since
    # users draft ahead and may send in another order.
    pool_prefix: bool = False
