"""PD disaggregation with real vLLM (CPU build, tiny model): kvswarm's real PD target.

One stack for the module (`kvswarm.vllm.pd`): a prefiller and a decoder, each on its
own core, moving the KV through a real Mooncake store (`MooncakeStoreConnector` and a
`mooncake_master` on loopback), behind kvswarm's proxy. Start-up is about a minute; the
stack is stopped before the single-server fixture of the other modules starts (this
module sorts first), so the two are never alive together.
"""

from __future__ import annotations

import csv
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kvswarm.engines.profile import metric_total
from kvswarm.metrics_sources.scrape import ScrapeSource
from kvswarm.metrics_sources.snapshot import Snapshot, split_key
from kvswarm.vllm.pd import VllmPdOptions, VllmPdStack, start_vllm_pd
from kvswarm.vllm.proxy import DECODE_HEADER, PREFILL_CACHED_HEADER, PREFILL_HEADER
from kvswarm.workloads import text
from tests.support.processes import REPO, run_dirs, run_locust

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BLOCK = 128  # tokens per KV block on vLLM's CPU backend
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
# Prompt tokens by where their KV came from: this source is the connector's transfer.
BY_SOURCE = "vllm:prompt_tokens_by_source_total"
TRANSFER_SOURCE = "external_kv_transfer"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmPdStack]:
    """The PD stack with Mooncake (the vLLM venv gets the wheel once); stopped at the end."""
    logs = tmp_path_factory.mktemp("vllm-pd")
    with start_vllm_pd(logs, VllmPdOptions(kv_store="mooncake")) as pd:
        yield pd


def post(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read()), dict(response.headers)


def complete(base_url: str, prompt: str) -> tuple[dict[str, Any], dict[str, str]]:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 8, "temperature": 0}
    return post(f"{base_url}/v1/completions", {**body, "ignore_eos": True})


def document(stack: VllmPdStack, tokens: int) -> str:
    """About `tokens` tokens of prose that no other request of the session started with."""
    pieces = text.prose(text.seeded("vllm-pd-tests", tokens))
    doc = f"[{uuid.uuid4().hex}] "
    while len(doc) < tokens * 8:
        doc += next(pieces)
    reply, _ = post(f"{stack.base_url}/tokenize", {"model": "tiny", "prompt": doc})
    return doc[: len(doc) * tokens // reply["count"]]


def cached(usage: dict[str, Any]) -> int:
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def snapshot(stack: VllmPdStack, name: str) -> Snapshot:
    return ScrapeSource(name, stack.metrics_urls[name], 5.0).snapshot()


def grew(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    """How much the samples of `name` (with `labels`, when given) grew, summed."""

    def total(snap: Snapshot) -> float:
        if not labels:
            return metric_total(snap.samples, name) or 0.0
        return sum(value for key, value in snap.samples.items() if _matches(key, name, labels))

    return total(after) - total(before)


def _matches(key: str, name: str, labels: dict[str, str]) -> bool:
    key_name, key_labels = split_key(key)
    return key_name == name and all(key_labels.get(k) == v for k, v in labels.items())


def prefilled(stack: VllmPdStack, prompt: str, timeout_s: float = 30.0) -> None:
    """Prefill `prompt` on the prefiller and wait until its KV blocks are in the store.

    The connector stores asynchronously, after the prefiller has answered; a decoder
    asked at once may find the store short. Waiting makes the counts below exact.
    """
    start = snapshot(stack, "mooncake_master")
    reply, _ = post(
        f"{stack.servers['prefiller'].base_url}/v1/completions",
        {"model": "tiny", "prompt": prompt, "max_tokens": 1},
    )
    blocks = (reply["usage"]["prompt_tokens"] - 1) // BLOCK
    deadline = time.monotonic() + timeout_s
    while grew(start, snapshot(stack, "mooncake_master"), "master_key_count") < blocks:
        assert time.monotonic() < deadline, f"the store did not get {blocks} blocks"
        time.sleep(0.05)


def test_the_decoder_loads_the_prompts_kv_from_the_store(stack: VllmPdStack) -> None:
    prompt = document(stack, 1600)
    prefilled(stack, prompt)
    before = snapshot(stack, "decoder")
    reply, headers = complete(stack.base_url, prompt)
    after = snapshot(stack, "decoder")
    usage = reply["usage"]
    # Whole blocks of the prompt, all but its last token, came over from the prefiller.
    expected = (usage["prompt_tokens"] - 1) // BLOCK * BLOCK
    assert cached(usage) == expected >= 1536
    assert grew(before, after, EXTERNAL_HITS) == expected
    assert grew(before, after, BY_SOURCE, source=TRANSFER_SOURCE) == expected
    # Not streamed: the prefiller's round trip, then the decoder's whole answer.
    assert float(headers[PREFILL_HEADER]) > 0 and float(headers[DECODE_HEADER]) > 0
    # The prefiller had prefilled it just before: its own cache held the same blocks.
    assert int(headers[PREFILL_CACHED_HEADER]) == expected


def test_the_masters_key_count_grows_by_the_prompts_blocks(stack: VllmPdStack) -> None:
    prompt = document(stack, 1300)
    before = snapshot(stack, "mooncake_master")
    reply, _ = complete(stack.base_url, prompt)
    blocks = (reply["usage"]["prompt_tokens"] - 1) // BLOCK
    deadline = time.monotonic() + 30.0
    while grew(before, after := snapshot(stack, "mooncake_master"), "master_key_count") < blocks:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert blocks >= 10
    assert grew(before, after, "master_key_count") == blocks
    # 2 KiB of KV per token: 4 layers, 2 KV heads of 64, K and V, 2 bytes each.
    assert grew(before, after, "master_allocated_bytes") == blocks * BLOCK * 2048


def test_a_repeated_prompt_is_then_found_in_the_decoders_own_cache(stack: VllmPdStack) -> None:
    prompt = document(stack, 1000)
    prefilled(stack, prompt)
    first, _ = complete(stack.base_url, prompt)
    before = snapshot(stack, "decoder")
    second, _ = complete(stack.base_url, prompt)
    after = snapshot(stack, "decoder")
    assert cached(second["usage"]) == cached(first["usage"]) > 0
    assert grew(before, after, EXTERNAL_HITS) == 0


def test_the_decoders_answer_is_the_prefillers_own(stack: VllmPdStack) -> None:
    prompt = document(stack, 900)
    through_pd, _ = complete(stack.base_url, prompt)
    alone, _ = complete(stack.servers["prefiller"].base_url, prompt)
    assert through_pd["choices"][0]["text"] == alone["choices"][0]["text"]


def kvswarm_config(stack: VllmPdStack) -> dict[str, Any]:
    return {
        # Chat: vLLM 0.32 reports `created_cache_tokens` on chat completions only.
        "target": {"model": "tiny", "engine": "vllm", "endpoint": "chat",
                   "max_model_len": 4096},
        "generation": {"max_tokens": 8},
        "timeouts": {"ttft_s": 60, "idle_s": 30},
        "scenarios": {
            "batch_processing": {"shared_tokens_min": 400, "shared_tokens_max": 600,
                                 "unique_tokens": 160},
        },
        "metrics_endpoints": stack.metrics_urls,
    }  # fmt: skip


@pytest.fixture(scope="module")
def pd_run(
    stack: VllmPdStack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """A kvswarm PD run (BatchProcessingUser, 2 users, 8 s) through the proxy."""
    tmp = tmp_path_factory.mktemp("vllm-pd-run")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(kvswarm_config(stack)))
    completed = run_locust(
        [
            "-f", str(REPO / "locustfiles"), "BatchProcessingUser", "--headless",
            "-u", "2", "-r", "2", "-t", "8s", "--stop-timeout", "60",
            "--host", stack.base_url, "--kv-mode", "pd_disaggregated",
            "--kv-config", str(config), "--kv-results", str(tmp / "results"),
        ],
        cwd=tmp,
        timeout_s=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(tmp / "results")
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((run / "run.json").read_text())


def test_a_kvswarm_pd_run_records_the_per_request_split(pd_run) -> None:
    rows, _ = pd_run
    ok = [row for row in rows if row["ok"] == "1"]
    assert len(ok) >= 5 and len(ok) == len(rows)
    for row in ok:
        assert row["mode"] == "pd_disaggregated"
        prefill, transfer, decode = (
            float(row[f"server_{phase}_ms"]) for phase in ("prefill", "transfer", "decode")
        )
        assert prefill > 0 and transfer > 0 and decode > 0
        # The proxy's clock starts after the client's and its first chunk reaches the
        # client after the proxy: prefill + transfer fit in the client's TTFT.
        assert prefill + transfer <= float(row["ttft_ms"])


def test_a_kvswarm_pd_run_reports_the_external_cached_share(pd_run) -> None:
    rows, meta = pd_run
    server = meta["server"]
    assert server["engine"] == "vllm"
    assert set(server["sources"]) >= {"target", "prefiller", "decoder", "mooncake_master"}
    assert server["cached_share_sources"] == ["prefiller"]
    assert server["external_cached_share"] is not None and server["external_cached_share"] > 0
    decoder = server["sources"]["decoder"]["deltas"]
    external = sum(v for k, v in decoder.items() if k.startswith(EXTERNAL_HITS))
    assert external > 0
    assert external <= sum(int(row["cached_tokens"] or 0) for row in rows)


def test_a_kvswarm_pd_run_keeps_the_prefillers_and_decoders_prompt_sources_apart(
    pd_run,
) -> None:
    """The decoder's prompts come (all but their last block) from the store; the
    prefiller's are computed or found in its own cache: each as its own figure, and
    every request says what the prefiller wrote to the cache."""
    rows, meta = pd_run
    by_source = meta["server"]["prompt_tokens_by_source"]
    assert by_source["decoder"][TRANSFER_SOURCE] > 0
    assert by_source["prefiller"].get(TRANSFER_SOURCE, 0) == 0
    assert by_source["prefiller"]["local_compute"] > 0
    assert all(row["created_cache_tokens"] != "" for row in rows)
    assert sum(int(row["created_cache_tokens"]) for row in rows) > 0
