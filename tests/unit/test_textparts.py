"""A prompt in parts (kvswarm.textparts) is sent as the JSON of the whole text, and the
long shared part goes out as the one encoding made of it, not a copy per request."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvswarm.textparts import JoinedText, SharedText, encode_body

# Characters JSON must escape, and some it must not touch.
awkward = st.text(alphabet=st.sampled_from('ab "\\\n\t\x00\x1féé€😀/'), max_size=30)


def _whole(body: dict) -> dict:
    """`body` with every text in parts joined into one string."""
    return {
        key: [{k: str(v) for k, v in m.items()} for m in value]
        if key == "messages"
        else str(value)
        if isinstance(value, JoinedText | SharedText)
        else value
        for key, value in body.items()
    }


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.one_of(awkward, awkward.map(SharedText)), max_size=5),
    system=st.one_of(awkward, awkward.map(SharedText)),
)
def test_a_body_in_parts_is_byte_for_byte_the_json_of_the_joined_text(parts, system) -> None:
    prompt = JoinedText(tuple(parts))
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "prompt": prompt,
        "stream": True,
    }
    sent = b"".join(encode_body(body))
    assert sent == orjson.dumps(_whole(body))
    assert orjson.loads(sent)["prompt"] == "".join(map(str, parts))


def test_a_shared_part_is_sent_as_its_one_encoding_in_every_request() -> None:
    document = SharedText("a long document " * 1000)
    first, second = (
        encode_body({"prompt": JoinedText((document, f"\n\nquestion {n}?"))}) for n in (1, 2)
    )
    assert any(buffer is document.json for buffer in first)
    assert any(buffer is document.json for buffer in second)
    # what each request encodes itself is the JSON around the texts and its own question
    assert sum(len(b) for b in first if b is not document.json) < 50


def test_a_body_without_parts_is_one_buffer() -> None:
    body = {"model": "m", "prompt": 'say "hi"\n', "max_tokens": 3}
    assert encode_body(body) == (orjson.dumps(body),)


def test_a_value_json_cannot_hold_is_still_an_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable: set"):
        encode_body({"prompt": {1, 2}})


def test_str_of_a_text_in_parts_is_the_whole_text() -> None:
    text = JoinedText(("tag\n\n", SharedText("document"), "\n\nquestion"))
    assert str(text) == "tag\n\ndocument\n\nquestion"
    assert str(SharedText("document")) == "document"
