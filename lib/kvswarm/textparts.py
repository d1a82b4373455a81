"""Prompt text sent in parts, so that no request copies a long shared prefix.

A long-context request is a 100-200-kB pool item and a question of a few hundred bytes.
Joined into one string and encoded into one JSON body, every request would copy the item
twice, into fresh memory each time (the allocator hands such blocks back to the kernel:
about five page faults per request). Instead a workload gives the client a `JoinedText`
whose parts are sent side by side: `encode_body` returns the JSON around the texts and
each part's encoding as separate buffers (`socket.sendmsg` takes many), and a pool item
is a `SharedText`, encoded once for the life of the process.

`str(text)` is the whole text, for what needs it as one string (a tokenizer, a test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

__all__ = ["Buffer", "JoinedText", "SharedText", "Text", "encode_body"]

Buffer: TypeAlias = bytes | memoryview


@dataclass(frozen=True, slots=True)
class SharedText:
    """A text many requests send (a pool item), with its JSON string encoded once."""

    text: str
    # Between the quotes of orjson's encoding: ready to go between other parts' bytes.
    json: memoryview = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json", memoryview(orjson.dumps(self.text))[1:-1])

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class JoinedText:
    """A text made of `parts`, in order, that is never joined to be sent."""

    parts: tuple[str | SharedText, ...]

    def __str__(self) -> str:
        return "".join(part.text if isinstance(part, SharedText) else part for part in self.parts)

    def json_buffers(self) -> list[Buffer]:
        """The text as a JSON string (quotes included), one buffer per part."""
        buffers: list[Buffer] = [_QUOTE]
        for part in self.parts:
            if isinstance(part, SharedText):
                buffers.append(part.json)
            elif part:
                buffers.append(memoryview(orjson.dumps(part))[1:-1])
        buffers.append(_QUOTE)
        return buffers


# A prompt or a message's content as a workload hands it over; `str()` of any is the text.
Text: TypeAlias = str | SharedText | JoinedText


_QUOTE = b'"'
# Stands in for a text in parts while the rest of the body is encoded. orjson never
# writes a raw NUL (in a string it is escaped as \\u0000), so the body splits on it.
_PLACE = orjson.Fragment(b"\0")


def encode_body(body: dict[str, Any]) -> Sequence[Buffer]:
    """`body` as JSON, in buffers to be sent in order: one when it holds no text in parts;
    else the JSON around such texts and each of their parts, none of them copied."""
    texts: list[JoinedText] = []

    def place(value: object) -> orjson.Fragment:
        if isinstance(value, SharedText):
            value = JoinedText((value,))
        if not isinstance(value, JoinedText):
            raise TypeError(f"{type(value).__name__} is not JSON serializable")
        texts.append(value)
        return _PLACE

    # orjson writes dataclasses as objects of their own unless told to pass them to `place`
    encoded = orjson.dumps(body, default=place, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    if not texts:
        return (encoded,)
    around = encoded.split(b"\0")
    buffers: list[Buffer] = [around[0]]
    for text, after in zip(texts, around[1:], strict=True):
        buffers += text.json_buffers()
        buffers.append(after)
    return buffers
