"""Property-based tests (hypothesis): no input makes kvswarm's readers raise a traceback
or hang. Each reader either gives its value or kvswarm's one-line error.

- the config loader, on any YAML document (and on text that is not YAML);
- the streaming client's HTTP/SSE parser, on any bytes split any way across `recv`;
- the requests.csv reader, on any CSV text with the right header or none.
"""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kvswarm.analysis.runs import read_requests
from kvswarm.client import CompletionRequest, StreamingClient, Timeouts
from kvswarm.config import Config, load_config
from kvswarm.errors import KvswarmError
from kvswarm.records import CSV_COLUMNS
from tests.unit.test_client_stream import FakeSocket, chat_chunk, chunked_response, sse

FAILURES = {
    "", "connect", "timeout_ttft", "timeout_idle", "timeout_total", "disconnect",
    "bad_chunk", "server_error", "empty",
}  # fmt: skip
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# YAML-able values: what a config file can hold.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
# Documents shaped like kvswarm's config: its real keys with any values.
KEYS = ["target", "generation", "timeouts", "scenarios", "deployment_modes", "results",
        "metrics_endpoints", "targets", "seed", "slo", "tokenizer"]  # fmt: skip
config_like = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)


def load(tmp_path: Path, text: str) -> Config | None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        return load_config(str(path))
    except KvswarmError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip() and "Traceback" not in message
        return None


@SETTINGS
@given(document=st.one_of(values, config_like))
def test_the_config_loader_takes_any_yaml_or_says_what_is_wrong(tmp_path: Path, document) -> None:
    load(tmp_path, yaml.safe_dump(document))


@SETTINGS
@given(text=st.text(alphabet=string.printable, max_size=200))
def test_the_config_loader_takes_any_text_or_says_what_is_wrong(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


def stream(pieces: list[bytes]):
    fake = FakeSocket(pieces)
    client = StreamingClient(
        "http://server:8000",
        timeouts=Timeouts(connect_s=1, ttft_s=1, idle_s=1, total_s=2),
        connector=lambda address, timeout: fake,
    )
    request = CompletionRequest(
        endpoint="chat", model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    return client.complete(request)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


VALID = chunked_response(sse(chat_chunk("Hello"), chat_chunk(" world", finish="stop"), "[DONE]"))


@SETTINGS
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 10**4), max_size=8))
def test_the_stream_parser_takes_any_bytes_and_names_a_failure_category(data, cuts) -> None:
    result = stream(split(data, cuts))
    assert result.failure in FAILURES or result.failure.startswith("http_")


@SETTINGS
@given(
    position=st.integers(0, len(VALID)),
    junk=st.binary(min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 10**4), max_size=8),
)
def test_a_valid_stream_with_junk_spliced_in_never_raises(position, junk, cuts) -> None:
    data = VALID[:position] + junk + VALID[position:]
    result = stream(split(data, cuts))
    assert result.failure in FAILURES or result.failure.startswith("http_")


@SETTINGS
@given(cuts=st.lists(st.integers(0, 10**4), max_size=12))
def test_a_valid_stream_split_anywhere_parses_the_same(cuts) -> None:
    result = stream(split(VALID, cuts))
    assert result.ok and result.text == "Hello world"


cells = st.text(alphabet=string.printable.replace("\r", ""), max_size=12)


@SETTINGS
@given(rows=st.lists(st.lists(cells, min_size=len(CSV_COLUMNS), max_size=len(CSV_COLUMNS)),
                     max_size=5),
       header=st.booleans())  # fmt: skip
def test_the_requests_csv_reader_takes_any_cells_or_says_what_is_wrong(
    tmp_path: Path, rows, header: bool
) -> None:
    import csv

    path = tmp_path / "requests.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    try:
        frame = read_requests(path)
    except KvswarmError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    assert len(frame) == len(rows)


trace_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 3000), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(-2, 50), max_size=8),
)  # fmt: skip
trace_rows = st.dictionaries(
    st.sampled_from(["timestamp", "input_length", "output_length", "hash_ids", "session_id",
                     "delay", "text_input", "messages"]),
    trace_values, max_size=6,
)  # fmt: skip


@SETTINGS
@given(
    rows=st.lists(st.one_of(trace_rows, st.text(max_size=30)), max_size=6),
    block=st.integers(1, 600),
)
def test_the_trace_reader_takes_any_lines_or_says_what_is_wrong(
    tmp_path: Path, rows, block: int
) -> None:
    import json

    from kvswarm.workloads.trace_file import load_trace

    path = tmp_path / "trace.jsonl"
    path.write_text(
        "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"
    )
    try:
        load_trace(path, block)
    except KvswarmError as exc:
        assert str(exc) and "\n" not in str(exc).strip()


# SSE streams as servers send them, and as odd ones might: fields, comments, blank lines,
# all three line ends, multi-line data, non-ASCII text.
sse_lines = st.one_of(
    st.builds(lambda text: f"data: {text}", st.text(max_size=12)),
    st.builds(lambda text: f"data:{text}", st.text(max_size=6)),
    st.sampled_from(["data: [DONE]", ": keep-alive", "event: x", "id: 7", "retry: 10", "", " "]),
)
# Mostly LF, as LLM servers send: a CR sends the rest of the stream to sseclient-py.
sse_line_ends = st.sampled_from(["\n"] * 8 + ["\r\n", "\r"])


@SETTINGS
@example(lines=[("data: ", "\n"), ("", "\n"), ("data: x", "\n")], cuts=[])
@given(
    lines=st.lists(st.tuples(sse_lines, sse_line_ends), max_size=14),
    cuts=st.lists(st.integers(0, 10**4), max_size=10),
)
def test_the_sse_reader_gives_what_sseclient_gives_however_the_bytes_are_split(lines, cuts) -> None:
    from sseclient import SSEClient

    from kvswarm.sse import event_data

    body = "".join(line + end for line, end in lines).encode()
    expected = [event.data.encode() for event in SSEClient([body]).events()]
    assert list(event_data(split(body, cuts))) == expected
