"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import StreamServer, start_stream_server
from tests.support.unpatched_locust import unpatched_locust  # noqa: F401 (a fixture)


@pytest.fixture
def stream_server(tmp_path: Path) -> Iterator[StreamServer]:
    """The tests' own streaming server on core 0: TTFT 50 ms, TPOT 10 ms, ground truth logged."""
    server = start_stream_server(tmp_path, core=0)
    try:
        yield server
    finally:
        server.stop()
