"""`sse_data` reads a byte stream as sseclient-py does, however the bytes are split."""

from __future__ import annotations

import pytest
from sseclient import SSEClient

from kvswarm.client import sse_data

STREAMS = [
    b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n',
    b'data: {"a": 1}\r\n\r\ndata: [DONE]\r\n\r\n',
    b"data: one\r\rdata: two\r\r",
    b": keep-alive\n\nevent: x\nid: 3\ndata: first\ndata:second\n\n",
    b"data\n\ndata: \n\nretry: 5\n\n   \ndata: after blank-ish\n\n",
    b"data: unterminated",
    b'data: {"t": "caf\xc3\xa9"}\n\n',
]


@pytest.mark.parametrize("stream", STREAMS)
def test_sse_data_matches_sseclient_at_every_split(stream: bytes) -> None:
    expected = [event.data for event in SSEClient([stream]).events()]
    for cut in range(len(stream) + 1):
        pieces = [stream[:cut], stream[cut:]]
        assert list(sse_data(pieces)) == expected, cut


def test_sse_data_matches_sseclient_byte_by_byte() -> None:
    stream = b"".join(STREAMS[:5])
    pieces = [stream[i : i + 1] for i in range(len(stream))]
    assert list(sse_data(pieces)) == [e.data for e in SSEClient(pieces).events()]


def test_invalid_utf8_in_data_raises() -> None:
    with pytest.raises(UnicodeDecodeError):
        list(sse_data([b"data: \xff\n\n"]))
