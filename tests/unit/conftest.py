"""Fixtures shared by the unit tests: an offline BPE tokenizer and a tiny /tokenize server."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from kvswarm.config import ScenarioConfig
from kvswarm.tokens import HFSizer
from kvswarm.workloads import (
    PromptRequest,
    SharedMaterial,
    Workload,
    builtin_scenarios,
    make_workload,
    text,
)
from tests.support.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def bpe_tokenizer() -> Tokenizer:
    """A byte-level BPE trained on kvswarm's own generators, once per test session."""
    return train_tokenizer()


@pytest.fixture(scope="session")
def bpe_sizer(bpe_tokenizer: Tokenizer) -> HFSizer:
    return HFSizer(bpe_tokenizer, source="test BPE")


@pytest.fixture(scope="session")
def tokenizer_file(bpe_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test tokenizer saved as a tokenizer.json."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    bpe_tokenizer.save(str(path))
    return path


@dataclass
class TokenizeServer:
    """A tokenize endpoint on 127.0.0.1 counting with the test tokenizer.

    `POST /tokenize` answers in vLLM's shape ({"prompt"} -> {"count", "tokens"}),
    `POST /llama/tokenize` in llama.cpp's ({"content"} -> {"tokens"}); anything else is
    a 404. `bodies` keeps every request body received.
    """

    root: str
    bodies: list[dict] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.bodies)


@pytest.fixture
def tokenize_server(bpe_tokenizer: Tokenizer) -> Iterator[TokenizeServer]:
    state = TokenizeServer(root="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.bodies.append(body)
            if self.path == "/tokenize":
                ids = bpe_tokenizer.encode(body["prompt"], add_special_tokens=False).ids
                reply = {"count": len(ids), "tokens": ids, "max_model_len": 32768}
            elif self.path == "/llama/tokenize":
                ids = bpe_tokenizer.encode(body["content"], add_special_tokens=False).ids
                reply = {"tokens": ids}
            else:
                self.send_error(404)
                return
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.root = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- workloads at test scale ---------------------------------------------------------------

SCENARIOS = tuple(builtin_scenarios())


def small_config(scenario: str, **changes: object) -> ScenarioConfig:
    """The built-in scenario's default config with lengths scaled down (ratios and pools
    kept)."""
    scaled = {
        "long_context_high_reuse": {"shared_tokens_min": 400, "shared_tokens_max": 800},
        "code_generation": {"shared_tokens_min": 300, "shared_tokens_max": 300},
        "multi_turn_conversation": {
            "shared_tokens_min": 100,
            "shared_tokens_max": 200,
            "unique_tokens": 24,
            "max_history_tokens": 1600,
        },
        "batch_processing": {"shared_tokens_min": 200, "shared_tokens_max": 400},
        "cold_start": {"unique_tokens": 200},
    }[scenario]
    default = builtin_scenarios()[scenario]
    unique = {"unique_tokens": min(default.unique_tokens, 48)}
    return dataclasses.replace(default, **{**unique, **scaled, **changes})


def reply_to(request: PromptRequest, tokens_hint: int = 30) -> str:
    """A deterministic stand-in for the assistant's reply to `request`."""
    rng = text.seeded("reply", request.request_id)
    sentences = itertools.islice(text.user_turn(rng), max(1, tokens_hint // 12))
    return " " + "".join(sentences).strip()


@pytest.fixture
def build_workload(bpe_sizer: HFSizer) -> Callable[..., Workload]:
    """Build a workload at test scale with the BPE sizer and a fresh shared material.

    `build_workload(scenario, config=None, *, run_id="run-1", worker_id="w1", user_id=1,
    material=None, seed=7)`; workloads made by one `build_workload` share its material
    (like users of one process).
    """
    shared = SharedMaterial(bpe_sizer)

    def build(
        scenario: str,
        config: ScenarioConfig | None = None,
        *,
        run_id: str = "run-1",
        worker_id: str = "w1",
        user_id: int = 1,
        material: SharedMaterial | None = None,
        seed: int = 7,
        max_model_len: int = 32768,
        max_tokens: int = 64,
    ) -> Workload:
        return make_workload(
            scenario,
            config or small_config(scenario),
            seed=seed,
            run_id=run_id,
            worker_id=worker_id,
            user_id=user_id,
            sizer=bpe_sizer,
            max_model_len=max_model_len,
            max_tokens=max_tokens,
            material=material or shared,
        )

    return build
