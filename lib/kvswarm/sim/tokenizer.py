"""The simulator's tokenizer: one whitespace-separated word is one token.

Real tokenizers split words into sub-word pieces; the simulator does not need to, it needs
a rule that is deterministic, fast (a 32k-token prompt in about a millisecond, because the
server tokenizes on its event loop) and easy for a client to reproduce: `str.split()`.
Punctuation stays attached to its word (`"end."` is one token).

Chat messages are rendered with a ChatML-like template whose markers are single tokens:
`<|im_start|> role <content words> <|im_end|>` per message, then `<|im_start|> assistant`
(the generation prompt, as vLLM's /tokenize adds by default).

Token ids (only /tokenize shows them) are the CRC-32 of the word modulo `VOCAB_SIZE`, so
the same word has the same id in every process.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

VOCAB_SIZE = 151_936  # Qwen2.5's vocabulary size, for ids of a familiar magnitude.

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# The text the simulated model generates: token i of a response is WORDS[i % len(WORDS)].
# Each carries a leading space, so concatenated content splits back into one word per token.
_TEXT = (
    "the quick brown fox jumps over a lazy dog while simulated tokens stream from "
    "kvswarm sim at a modelled pace so load tests can measure time to first token "
    "and time per output token without any real model or GPU behind the server"
)
WORDS = tuple(" " + word for word in _TEXT.split(" "))


class PromptError(ValueError):
    """The request's prompt or messages have the wrong shape; the message says how."""


def split_text(text: str) -> list[str]:
    """The tokens of a plain-text prompt."""
    return text.split()


def chat_tokens(messages: Sequence[Any], add_generation_prompt: bool = True) -> list[str]:
    """The tokens of a chat conversation rendered with the ChatML-like template."""
    if not isinstance(messages, list) or not messages:
        raise PromptError("'messages' must be a non-empty list")
    tokens: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise PromptError(f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise PromptError(f"messages[{index}].role must be a non-empty string")
        tokens.append(IM_START)
        tokens.append(role)
        tokens.extend(_content_text(message.get("content"), index).split())
        tokens.append(IM_END)
    if add_generation_prompt:
        tokens.append(IM_START)
        tokens.append("assistant")
    return tokens


def _content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    raise PromptError(f"messages[{index}].content must be a string or a list of parts")


def token_ids(tokens: Sequence[str]) -> list[int]:
    """Deterministic ids of the tokens (the same in every process)."""
    crc32 = zlib.crc32
    return [crc32(token.encode("utf-8", "surrogatepass")) % VOCAB_SIZE for token in tokens]


def id_tokens(ids: Sequence[int]) -> list[str]:
    """Tokens standing for a prompt given as token ids (`prompt: [1, 2, 3]`)."""
    return [f"<{token_id}>" for token_id in ids]


def generated_text(count: int, start: int = 0) -> str:
    """The text of `count` generated tokens beginning at token index `start`."""
    size = len(WORDS)
    return "".join(WORDS[(start + i) % size] for i in range(count))
