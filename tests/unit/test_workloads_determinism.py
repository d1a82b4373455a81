"""Shared prefixes are identical everywhere; unique parts never collide."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys

import pytest

from kvswarm.workloads import SharedMaterial
from tests.unit.conftest import SCENARIOS, reply_to, small_config

POOLED = [s for s in SCENARIOS if s != "cold_start"]

# Run in a fresh interpreter: every pool item of every pooled scenario, as hashes, and the
# first requests of one user, from a tokenizer.json and configs given on the command line.
_PROCESS_SCRIPT = """
import hashlib, json, sys
from kvswarm.config import ScenarioConfig
from kvswarm.tokens import HFSizer
from kvswarm.workloads import SharedMaterial, make_workload

tokenizer, configs = sys.argv[1], json.loads(sys.argv[2])
sizer = HFSizer.load(tokenizer)
material = SharedMaterial(sizer)
out = {}
for scenario, fields in configs.items():
    workload = make_workload(
        scenario, ScenarioConfig(**fields), seed=42, run_id="r", worker_id="w", user_id=0,
        sizer=sizer, max_model_len=32768, max_tokens=64, material=material,
    )
    items = [workload.pool.item(i) for i in range(len(workload.pool))]
    out[scenario] = {
        "items": [[it.prefix_id, it.tokens, hashlib.sha256(it.text.encode()).hexdigest()]
                  for it in items],
        "requests": [str(workload.next_request().prompt) for _ in range(5)],
    }
print(json.dumps(out))
"""


def test_two_processes_with_the_same_seed_make_byte_identical_prefixes(
    tokenizer_file, build_workload
):
    configs = {s: dataclasses.asdict(small_config(s)) for s in POOLED}
    argv = [sys.executable, "-c", _PROCESS_SCRIPT, str(tokenizer_file), json.dumps(configs)]
    processes = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}
        )
        for seed in (1, 2)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert outputs[0] == outputs[1]
    # and this process, with another material, agrees too
    for scenario in POOLED:
        workload = build_workload(scenario, seed=42, worker_id="w", user_id=0)
        ids = [workload.pool.item(i).prefix_id for i in range(len(workload.pool))]
        assert ids == [item[0] for item in outputs[0][scenario]["items"]]
        assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_different_workers_and_users_never_produce_the_same_prompt(build_workload, scenario):
    prompts = []
    for worker, user in itertools.product(("host-a_1", "host-a_2", "host-b_1"), (0, 1)):
        workload = build_workload(scenario, worker_id=worker, user_id=user)
        for _ in range(40):
            request = workload.next_request()
            workload.observe_reply(request, reply_to(request))
            prompts.append(str(request.prompt))
    assert len(set(prompts)) == len(prompts)


@pytest.mark.parametrize("scenario", POOLED)
def test_workers_share_prefixes_but_not_the_text_after_them(build_workload, scenario):
    config = small_config(scenario, pool_size=1)
    a, b = (
        build_workload(scenario, config, worker_id="a"),
        build_workload(scenario, config, worker_id="b"),
    )
    item = a.pool.item(0)
    ra = next(r for r in iter(a.next_request, None) if r.prefix_id == item.prefix_id)
    rb = next(r for r in iter(b.next_request, None) if r.prefix_id == item.prefix_id)
    pa, pb = str(ra.prompt), str(rb.prompt)
    common = len(_common_prefix(pa, pb))
    # identical through the shared prefix (and the separator or turn marker after it),
    # then different within the first characters of the tag
    assert pa.startswith(item.text)
    assert len(item.text) <= common < len(item.text) + 16


def test_same_identity_and_seed_replays_the_same_requests(bpe_sizer, build_workload):
    first = build_workload("batch_processing", material=SharedMaterial(bpe_sizer))
    again = build_workload("batch_processing", material=SharedMaterial(bpe_sizer))
    assert [first.next_request() for _ in range(20)] == [again.next_request() for _ in range(20)]


@pytest.mark.parametrize("scenario", ["cold_start", "long_context_high_reuse"])
def test_another_run_makes_other_designed_misses(build_workload, bpe_tokenizer, scenario):
    """A second run against the same server must miss where the first missed."""
    runs = [build_workload(scenario, run_id=run_id) for run_id in ("run-1", "run-2")]
    misses = [
        [str(r.prompt) for r in (w.next_request() for _ in range(100)) if not r.prefix_id]
        for w in runs
    ]
    assert all(len(m) >= 5 for m in misses)
    heads = [{prompt[:64] for prompt in m} for m in misses]
    assert not heads[0] & heads[1]
    blocks = [{tuple(bpe_tokenizer.encode(p).ids[:16]) for p in m} for m in misses]
    assert not blocks[0] & blocks[1]


def test_same_run_and_worker_replay_the_same_requests(bpe_sizer, build_workload):
    first, again = (
        build_workload(
            "multi_turn_conversation",
            run_id="run-9",
            worker_id="w3",
            user_id=2,
            material=SharedMaterial(bpe_sizer),
        )
        for _ in range(2)
    )
    for _ in range(20):
        a, b = first.next_request(), again.next_request()
        assert a == b
        first.observe_reply(a, reply_to(a))
        again.observe_reply(b, reply_to(b))


@pytest.mark.parametrize("scenario", POOLED)
def test_pools_are_the_same_in_every_run(bpe_sizer, build_workload, scenario):
    a, b = (
        build_workload(scenario, run_id=run_id, material=SharedMaterial(bpe_sizer))
        for run_id in ("run-1", "run-2")
    )
    a.prepare()
    b.prepare()
    assert [a.pool.item(i) for i in range(len(a.pool))] == [
        b.pool.item(i) for i in range(len(b.pool))
    ]


def test_another_seed_makes_other_prefixes(build_workload):
    a = build_workload("code_generation", seed=1)
    b = build_workload("code_generation", seed=2)
    assert a.pool.item(0).text != b.pool.item(0).text


def test_cold_start_prompts_share_no_16_token_prefix_block(build_workload, bpe_tokenizer):
    first_blocks = set()
    total = 0
    for worker, user in itertools.product(("w1", "w2"), range(3)):
        workload = build_workload("cold_start", worker_id=worker, user_id=user)
        for _ in range(60):
            ids = bpe_tokenizer.encode(str(workload.next_request().prompt)).ids
            first_blocks.add(tuple(ids[:16]))
            total += 1
    assert len(first_blocks) == total


def test_designed_misses_share_no_16_token_prefix_block_with_any_prompt(
    build_workload, bpe_tokenizer
):
    workload = build_workload("long_context_high_reuse")
    requests = [workload.next_request() for _ in range(300)]
    first_blocks = [tuple(bpe_tokenizer.encode(str(r.prompt)).ids[:16]) for r in requests]
    for request, block in zip(requests, first_blocks, strict=True):
        if not request.prefix_id:
            assert first_blocks.count(block) == 1


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
