"""A real llama-server with the tiny generated model, for the whole test session.

The first session on a machine builds llama-server (about 5 minutes on 2 cores) and
writes the model; both are cached under the user cache directory, so later sessions
start the server in about a second. Set KVSWARM_BUILD_JOBS to compile with more jobs.

The server gets half the CPUs (1 thread on a 2-core box): the load generator runs on the
same machine, and ggml's worker threads spin while they wait, so a server with every core
makes its own decode 5-10x slower whenever the client needs CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kvswarm.llamacpp.build import DEFAULT_JOBS, ensure_llama_server
from kvswarm.llamacpp.server import LlamaServer, LlamaServerOptions, start_llama_server

SLOTS = 4
CTX_PER_SLOT = 4096


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-server on a free port: 4 slots of 4096 tokens, /metrics on; always stopped."""
    jobs = int(os.environ.get("KVSWARM_BUILD_JOBS", DEFAULT_JOBS))
    build = ensure_llama_server(jobs=jobs)
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    threads = max(1, (os.cpu_count() or 2) // 2)
    options = LlamaServerOptions(slots=SLOTS, ctx_per_slot=CTX_PER_SLOT, threads=threads)
    server = start_llama_server(options, binary=build.binary, log_path=log_path)
    try:
        yield server
    finally:
        server.stop()
