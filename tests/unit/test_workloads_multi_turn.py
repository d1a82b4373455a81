"""Multi-turn conversations: history grows with real replies, ends and restarts as configured."""

from __future__ import annotations

from tests.unit.conftest import reply_to, small_config

SCENARIO = "multi_turn_conversation"


def test_history_grows_turn_by_turn_with_the_assistants_replies(build_workload):
    workload = build_workload(SCENARIO, small_config(SCENARIO, reuse_ratio=1.0, max_turns=5))
    previous, previous_reply = None, ""
    for turn in range(1, 6):
        request = workload.next_request()
        assert request.turn == turn
        assert len(request.messages) == 2 * turn
        roles = [m["role"] for m in request.messages]
        assert roles == ["system"] + ["user", "assistant"] * (turn - 1) + ["user"]
        if previous is not None:
            assert request.messages[-2] == {"role": "assistant", "content": previous_reply}
            assert request.prompt.startswith(previous.prompt + previous_reply)
            assert request.conversation_id == previous.conversation_id
            assert request.prefix_id == request.conversation_id
            assert request.prefix_tokens > previous.prompt_tokens_sized
            assert request.expected_hit
        previous, previous_reply = request, reply_to(request)
        workload.observe_reply(request, previous_reply)


def test_conversation_restarts_after_max_turns(build_workload):
    workload = build_workload(SCENARIO, small_config(SCENARIO, reuse_ratio=1.0, max_turns=3))
    requests = []
    for _ in range(9):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request))
        requests.append(request)
    assert [r.turn for r in requests] == [1, 2, 3] * 3
    assert len({r.conversation_id for r in requests}) == 3


def test_conversation_restarts_before_exceeding_max_history_tokens(build_workload, bpe_sizer):
    config = small_config(SCENARIO, reuse_ratio=1.0, max_turns=50, max_history_tokens=700)
    workload = build_workload(SCENARIO, config)
    requests = []
    for _ in range(60):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request, tokens_hint=80))
        requests.append(request)
    assert max(r.turn for r in requests) < 50
    assert sum(r.turn == 1 for r in requests) >= 3
    for request in requests:
        assert request.prompt_tokens_sized <= 700
        assert bpe_sizer.count(request.prompt) <= 700 * 1.02


def test_first_turn_is_a_hit_only_when_its_opener_was_seen(build_workload):
    config = small_config(SCENARIO, reuse_ratio=1.0, max_turns=1, pool_size=3)
    workload = build_workload(SCENARIO, config)
    seen = set()
    for _ in range(30):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request))
        assert request.turn == 1
        assert request.prefix_id.startswith("chat-")
        assert request.expected_hit == (request.prefix_id in seen)
        seen.add(request.prefix_id)
    assert len(seen) == 3


def test_designed_misses_open_a_conversation_unique_from_the_first_token(build_workload):
    workload = build_workload(SCENARIO, small_config(SCENARIO, reuse_ratio=0.5))
    misses = []
    for _ in range(100):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request))
        if not request.expected_hit:
            misses.append(request)
    opened_unique = [r for r in misses if not r.prefix_id]
    assert opened_unique
    for request in opened_unique:
        assert request.turn == 1
        assert request.messages[0]["content"].startswith(request.prompt[:12])
        assert request.request_id in request.prompt.split("\n", 1)[0]


def test_a_turn_without_reply_is_dropped(build_workload):
    workload = build_workload(SCENARIO, small_config(SCENARIO, reuse_ratio=1.0, max_turns=8))
    first = workload.next_request()
    workload.observe_reply(first, reply_to(first))
    unanswered = workload.next_request()
    workload.observe_reply(unanswered, "   ")
    retry = workload.next_request()
    assert retry.turn == unanswered.turn == 2
    assert len(retry.messages) == len(unanswered.messages)
    assert retry.messages[:-1] == unanswered.messages[:-1]
    assert retry.messages[-1] != unanswered.messages[-1]


def test_a_stale_reply_is_ignored(build_workload):
    workload = build_workload(SCENARIO, small_config(SCENARIO, reuse_ratio=1.0))
    first = workload.next_request()
    second = workload.next_request()  # first got no reply
    workload.observe_reply(first, "a late reply")
    workload.observe_reply(second, reply_to(second))
    third = workload.next_request()
    assert "a late reply" not in third.prompt
    assert third.turn == 2
