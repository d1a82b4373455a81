"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import StreamServer, start_stream_server
from tests.support.unpatched_locust import unpatched_locust  # noqa: F401 (a fixture)

# Every Locust process a test starts would serve kvswarm's exporter on 9646; tests that
# run several at once (or beside a developer's own run) would collide there. The tests of
# the exporter give their own port.
os.environ.setdefault("KVSWARM_EXPORTER_PORT", "0")


@pytest.fixture
def stream_server(tmp_path: Path) -> Iterator[StreamServer]:
    """The tests' own streaming server on core 0: TTFT 50 ms, TPOT 10 ms, ground truth logged."""
    server = start_stream_server(tmp_path, core=0)
    try:
        yield server
    finally:
        server.stop()
