"""Engine profiles and the server window against the simulated stack and small HTTP stubs:
labelled counters, PD cached share, KV store, per-request timings, prefix-cache resets."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kvswarm.client import CompletionRequest, StreamingClient, StreamResult
from kvswarm.engines import LLAMA_CPP, SGLANG, SIM, VLLM, detect_engine
from kvswarm.metrics_sources import ServerWindow, scrape
from kvswarm.sim import SimOptions, start_stack
from kvswarm.sim.stack import RunningStack
from tests.integration.test_sim_http import fast_options, words


@pytest.fixture
def sim() -> Iterator[RunningStack]:
    with start_stack(fast_options()) as stack:
        yield stack


@pytest.fixture
def pd() -> Iterator[RunningStack]:
    with start_stack(fast_options(mode="pd_disaggregated", kv_store="memory")) as stack:
        yield stack


def complete(base_url: str, prompt: str, stream: bool = True) -> StreamResult:
    client = StreamingClient(base_url)
    try:
        request = CompletionRequest(
            "completions", SimOptions().model, 3, prompt=prompt, stream=stream
        )
        result = client.complete(request)
    finally:
        client.close()
    assert result.ok, result.error
    return result


# --- metrics and the window -----------------------------------------------------------------


def test_sim_labels_its_vllm_counters_like_vllm(sim: RunningStack) -> None:
    snapshot = scrape(sim.metrics_urls["server"])
    keys = [key for key in snapshot.samples if key.startswith("vllm:prefix_cache_hits_total")]
    assert len(keys) == 1 and 'engine="0"' in keys[0] and "model_name=" in keys[0]


def test_the_simulator_is_detected_as_sim(sim: RunningStack) -> None:
    assert detect_engine(sim.base_url, 5.0)[0] == "sim"


def test_sim_window_reports_the_cached_share_of_its_labelled_counters(sim: RunningStack) -> None:
    window = ServerWindow.open(sim.base_url, "auto")
    shared = words(160, "doc")
    complete(sim.base_url, shared + " first")
    complete(sim.base_url, shared + " second")
    report = window.close()
    deltas = report.sources["target"].deltas
    assert deltas is not None
    hits = sum(v for k, v in deltas.items() if k.startswith("vllm:prefix_cache_hits_total"))
    queries = sum(v for k, v in deltas.items() if k.startswith("vllm:prefix_cache_queries_total"))
    assert report.engine == "sim"
    assert hits > 0 and report.cached_share == pytest.approx(hits / queries)


def test_sim_window_names_the_in_process_store(sim: RunningStack) -> None:
    assert ServerWindow.open(sim.base_url, "auto").close().kv_store == "in-process"


def test_pd_cached_share_comes_from_the_prefiller(pd: RunningStack) -> None:
    # The proxy's page is the target's: read once.
    window = ServerWindow.open(pd.base_url, "auto", dict(pd.metrics_urls))
    shared = words(160, "doc")
    complete(pd.base_url, shared + " first")
    complete(pd.base_url, shared + " second")
    report = window.close()
    assert set(report.sources) == {"target", "prefiller", "decoder"}
    prefiller = scrape(pd.metrics_urls["prefiller"])
    hits = prefiller.value("vllm:prefix_cache_hits_total")
    queries = prefiller.value("vllm:prefix_cache_queries_total")
    assert report.cached_share_sources == ("prefiller",)
    assert hits and report.cached_share == pytest.approx(hits / queries)
    assert report.kv_store == "in-process"


# --- per-request timings --------------------------------------------------------------------


def test_sim_request_timings_include_the_decode_trailer_of_a_stream(sim: RunningStack) -> None:
    timings = SIM.request_timings(complete(sim.base_url, words(40)))
    assert timings.decode_s is not None and timings.decode_s > 0
    assert timings.prefill_s is not None and timings.prefill_s > 0
    assert timings.prompt_tokens == 40 and timings.cached_tokens == 0


# --- prefix-cache resets --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["non_disaggregated", "pd_disaggregated"])
def test_after_a_sim_reset_a_repeated_prompt_reports_no_cached_tokens(mode: str) -> None:
    with start_stack(fast_options(mode=mode, kv_store="memory")) as stack:
        prompt = words(100, "same")
        complete(stack.base_url, prompt)
        assert complete(stack.base_url, prompt, stream=False).cached_tokens == 96
        reset = SIM.reset_prefix_cache(stack.base_url, 5.0)
        assert reset.status == "reset", reset.detail
        assert complete(stack.base_url, prompt, stream=False).cached_tokens == 0


Route = Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]


@contextmanager
def stub(routes: dict[tuple[str, str], Route]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering `(method, path)` from `routes` (404 otherwise); yields its
    base URL and the list of requests it saw."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            seen.append(f"{self.command} {self.path}")
            route = routes.get((self.command, self.path))
            status, body = route(self) if route else (404, b'{"detail":"Not Found"}')
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 (http.server's naming)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def test_vllm_without_dev_mode_cannot_reset_and_says_how_to_enable_it() -> None:
    with stub({}) as (base_url, seen):
        reset = VLLM.reset_prefix_cache(base_url, 5.0)
    assert seen == ["POST /reset_prefix_cache"]
    assert reset.status == "not_supported"
    assert "VLLM_SERVER_DEV_MODE=1" in reset.detail


def test_vllm_in_dev_mode_resets() -> None:
    with stub({("POST", "/reset_prefix_cache"): lambda _: (200, b"")}) as (base_url, _):
        assert VLLM.reset_prefix_cache(base_url, 5.0).status == "reset"


def test_a_server_error_on_reset_is_failed_with_its_message() -> None:
    with stub({("POST", "/reset_prefix_cache"): lambda _: (500, b"boom")}) as (base_url, _):
        reset = VLLM.reset_prefix_cache(base_url, 5.0)
    assert reset.status == "failed" and "HTTP 500" in reset.detail and "boom" in reset.detail


def test_llamacpp_reset_erases_every_slot() -> None:
    slots = json.dumps([{"id": 0}, {"id": 1}]).encode()
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/slots"): lambda _: (200, slots),
        ("POST", "/slots/0?action=erase"): lambda _: (200, b'{"id_slot":0,"n_erased":9}'),
        ("POST", "/slots/1?action=erase"): lambda _: (200, b'{"id_slot":1,"n_erased":0}'),
    }
    with stub(routes) as (base_url, seen):
        reset = LLAMA_CPP.reset_prefix_cache(base_url, 5.0)
    assert reset.status == "reset", reset.detail
    assert seen == ["GET /slots", "POST /slots/0?action=erase", "POST /slots/1?action=erase"]


def test_llamacpp_without_a_slot_save_path_cannot_erase_slots() -> None:
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/slots"): lambda _: (200, b'[{"id": 0}]'),
        ("POST", "/slots/0?action=erase"): lambda _: (501, b'{"error":"not supported"}'),
    }
    with stub(routes) as (base_url, _):
        reset = LLAMA_CPP.reset_prefix_cache(base_url, 5.0)
    assert reset.status == "not_supported" and "--slot-save-path" in reset.detail


def test_sglang_reset_flushes_its_cache() -> None:
    with stub({("POST", "/flush_cache"): lambda _: (200, b"Cache flushed.")}) as (base_url, _):
        assert SGLANG.reset_prefix_cache(base_url, 5.0).status == "reset"
