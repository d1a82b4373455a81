"""Reuse accounting: realised vs designed reuse ratio, and what `expected_hit` means."""

from __future__ import annotations

import re

import pytest

from kvswarm.workloads import SharedMaterial, WorkloadSummary, merge_stats
from tests.unit.conftest import SCENARIOS, reply_to, small_config


def _run(workload, requests: int) -> list:
    out = []
    for _ in range(requests):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request))
        out.append(request)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_realised_reuse_of_2000_requests_is_within_3_points(build_workload, scenario):
    workload = build_workload(scenario)
    requests = _run(workload, 2000)
    realised = sum(r.expected_hit for r in requests) / len(requests)
    assert realised == pytest.approx(small_config(scenario).reuse_ratio, abs=0.03)
    assert workload.stats.realised_reuse_ratio == realised


@pytest.mark.parametrize("scenario", ["long_context_high_reuse", "multi_turn_conversation"])
def test_realised_reuse_holds_across_users_of_one_process(build_workload, scenario):
    users = [build_workload(scenario, user_id=u) for u in range(10)]
    hits = sum(r.expected_hit for user in users for r in _run(user, 200))
    assert hits / 2000 == pytest.approx(small_config(scenario).reuse_ratio, abs=0.03)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_configured_ratio_is_followed_at_the_extremes(build_workload, ratio):
    workload = build_workload(
        "batch_processing", small_config("batch_processing", reuse_ratio=ratio)
    )
    requests = _run(workload, 500)
    realised = sum(r.expected_hit for r in requests) / 500
    # at 1.0 the first use of each of the 3 pool prefixes is still a designed miss
    assert realised == pytest.approx(ratio, abs=0.01)


@pytest.mark.parametrize(
    "scenario", ["long_context_high_reuse", "code_generation", "batch_processing"]
)
def test_expected_hit_means_the_fleet_sent_the_prefix_before(build_workload, scenario):
    seen: set[str] = set()
    for request in _run(build_workload(scenario), 300):
        if request.prefix_id:
            assert request.expected_hit == (request.prefix_id in seen)
            seen.add(request.prefix_id)
        else:
            assert not request.expected_hit
            assert request.prefix_tokens == 0


def test_first_use_in_the_process_is_the_only_designed_miss_per_pool_prefix(
    bpe_sizer, build_workload
):
    material = SharedMaterial(bpe_sizer)
    config = small_config("long_context_high_reuse", reuse_ratio=1.0)
    first, second = (
        build_workload("long_context_high_reuse", config, user_id=u, material=material)
        for u in (1, 2)
    )
    first_requests = _run(first, 60)
    assert sum(not r.expected_hit for r in first_requests) == 4  # pool_size
    assert all(r.expected_hit for r in _run(second, 60))


def test_designed_misses_begin_with_the_unique_tag(build_workload):
    misses = [r for r in _run(build_workload("code_generation"), 200) if not r.prefix_id]
    assert len(misses) > 20
    for request in misses:
        tag = re.compile(r"[b-t]{12} \[" + re.escape(request.request_id) + r"\]\n\n")
        assert tag.match(str(request.prompt))
        assert tag.match(str(request.messages[0]["content"]))
    assert len({str(r.prompt)[:12] for r in misses}) == len(misses)


def test_hits_share_the_pool_prefix_and_differ_right_after_it(build_workload):
    workload = build_workload(
        "long_context_high_reuse", small_config("long_context_high_reuse", pool_size=1)
    )
    hits = [r for r in _run(workload, 50) if r.expected_hit]
    prefix = workload.pool.item(0).text + "\n\n"
    prompts = [str(r.prompt) for r in hits]
    assert all(prompt.startswith(prefix) for prompt in prompts)
    heads = {prompt[len(prefix) : len(prefix) + 12] for prompt in prompts}
    assert len(heads) == len(hits)


def test_stats_state_merges_workers(build_workload):
    a, b = (
        build_workload("batch_processing", worker_id="a"),
        build_workload("batch_processing", worker_id="b"),
    )
    _run(a, 100)
    _run(b, 50)
    merged = type(a.stats).from_state(a.stats.as_state())
    merged.merge(b.stats)
    summary = merged.summary()
    assert summary.requests == 150
    assert summary.prompt_tokens.count == 150
    assert summary.configured_reuse_ratio == 0.95
    assert summary.type == "batch_processing"


def test_merge_stats_merges_per_scenario_without_touching_its_inputs(build_workload):
    users = [build_workload("code_generation", user_id=u) for u in range(3)]
    users.append(build_workload("cold_start"))
    for user in users:
        _run(user, 10)
    merged = merge_stats(user.stats for user in users)
    assert {name: stats.requests for name, stats in merged.items()} == {
        "code_generation": 30,
        "cold_start": 10,
    }
    assert all(user.stats.requests == 10 for user in users)


def test_workload_summary_round_trips_through_a_dict(build_workload):
    workload = build_workload("long_context_high_reuse")
    _run(workload, 20)
    summary = workload.stats.summary()
    data = summary.to_dict()
    assert data["scenario"] == "long_context_high_reuse"
    assert data["prompt_tokens"]["count"] == 20
    assert WorkloadSummary.from_dict(data) == summary


# --- a fleet: first uses counted once across processes ---------------------------------------


def _fleet(bpe_sizer, workers: int) -> list[SharedMaterial]:
    """One SharedMaterial per simulated worker process, each telling the others of its
    first uses (as the Locust glue does over the message channel)."""
    materials = [SharedMaterial(bpe_sizer) for _ in range(workers)]
    for material in materials:
        others = [m for m in materials if m is not material]
        material.seen.on_first_use = lambda prefix_id, others=others: [
            other.seen.mark_seen(prefix_id) for other in others
        ]
    return materials


def test_first_uses_are_misses_once_across_the_fleet(bpe_sizer, build_workload):
    config = small_config("long_context_high_reuse", reuse_ratio=1.0)
    a, b = (
        build_workload("long_context_high_reuse", config, worker_id=w, material=m)
        for w, m in zip(("a", "b"), _fleet(bpe_sizer, 2), strict=True)
    )
    requests = []
    for _ in range(60):  # interleaved, as two workers run side by side
        requests += _run(a, 1) + _run(b, 1)
    first_uses = [r.prefix_id for r in requests if not r.expected_hit]
    assert sorted(first_uses) == sorted({r.prefix_id for r in requests})
    assert len(first_uses) == config.pool_size


def test_a_report_from_another_process_fires_no_callback(bpe_sizer):
    calls: list[str] = []
    material = SharedMaterial(bpe_sizer)
    material.seen.on_first_use = calls.append
    material.seen.mark_seen("doc-0-00000000")
    assert not material.seen.first_use("doc-0-00000000")
    assert material.seen.first_use("doc-1-00000000")
    assert calls == ["doc-1-00000000"]


@pytest.mark.parametrize(("users", "turns"), [(20, 2), (4, 10)])
def test_short_run_of_a_95_percent_scenario_realises_its_ratio(
    bpe_sizer, build_workload, users, turns
):
    """Two workers, 40 requests each: the pool's first uses are spent on wanted misses, not
    on wanted hits (choosing items at random, per process, realised 85-90% here)."""
    config = small_config("batch_processing")
    assert config.reuse_ratio == 0.95
    fleet = [
        build_workload("batch_processing", config, worker_id=f"w{w}", user_id=u, material=m)
        for w, m in enumerate(_fleet(bpe_sizer, 2))
        for u in range(users)
    ]
    requests = []
    for _ in range(turns):  # users taking turns, as they do under load
        for user in fleet:
            requests += _run(user, 1)
    assert len(requests) == 80
    realised = sum(r.expected_hit for r in requests) / len(requests)
    assert realised >= 0.9


def test_wanted_misses_are_spent_on_first_uses_while_items_are_unseen(build_workload):
    workload = build_workload(
        "code_generation", small_config("code_generation", reuse_ratio=0.5, pool_size=4)
    )
    requests = _run(workload, 40)
    first_uses = [r for r in requests if r.prefix_id and not r.expected_hit]
    assert len(first_uses) == 4
    # no request began with its tag before the pool had been used up
    last_first_use = requests.index(first_uses[-1])
    assert all(r.prefix_id for r in requests[:last_first_use])


def test_a_prefix_shorter_than_the_servers_block_is_a_designed_miss(build_workload) -> None:
    workload = build_workload("batch_processing")
    requests = [workload.next_request() for _ in range(30)]
    assert any(request.expected_hit for request in requests)
    blocked = build_workload("batch_processing")
    blocked.min_hit_tokens = 10**6  # longer than any prefix
    assert not any(blocked.next_request().expected_hit for _ in range(30))


def test_the_first_use_is_settled_in_the_order_requests_are_sent(build_workload) -> None:
    """Users draft ahead; two drafts of one pool item are a miss and a hit in the order
    they go out, whichever was drafted first."""
    import dataclasses

    from kvswarm.workloads import builtin_scenarios

    config = dataclasses.replace(builtin_scenarios()["batch_processing"], pool_size=1,
                                 shared_tokens_min=100, shared_tokens_max=100,
                                 unique_tokens=20, reuse_ratio=1.0)  # fmt: skip
    first_drafted = build_workload("batch_processing", config, user_id=1)
    second_drafted = build_workload("batch_processing", config, user_id=2)
    a = first_drafted.draft_request()
    b = second_drafted.draft_request()
    assert a.pool_prefix and b.pool_prefix and a.prefix_id == b.prefix_id
    sent_b = second_drafted.count_sent(b)
    sent_a = first_drafted.count_sent(a)
    assert (sent_b.expected_hit, sent_a.expected_hit) == (False, True)
    assert first_drafted.stats.expected_hits == 1 and second_drafted.stats.expected_hits == 0
