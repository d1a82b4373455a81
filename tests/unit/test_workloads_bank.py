"""The counted sentence bank: cold-start prompts of an exact length, with no count per request."""

from __future__ import annotations

import random

import pytest

from kvswarm.tokens import HFSizer, ServerSizer
from kvswarm.workloads import SharedMaterial, builtin_scenarios, make_workload, text
from kvswarm.workloads.bank import PARAGRAPH_BREAK, CountedBank


@pytest.fixture(scope="module")
def bank(bpe_tokenizer) -> CountedBank:
    counted = CountedBank.counted(HFSizer(bpe_tokenizer), text.sentence_bank())
    assert counted is not None
    return counted


@pytest.mark.parametrize("target", [20, 61, 150, 999, 4000, 16000])
def test_a_drawn_body_is_exactly_its_target_in_the_tokenizers_own_count(bank, bpe_sizer, target):
    for seed in range(20):
        body, tokens = bank.draw(random.Random(seed), target)
        assert tokens == target
        assert bpe_sizer.count(body) == target


class WordSizer:
    """A tokenizer of one token per word: sentences of 11-17 tokens, so no one or two of
    them make 18-21 (the gap a two-sentence close fell into)."""

    def count(self, text: str) -> int:
        return len(text.split())


@pytest.mark.parametrize("target", [22, 40, 280, 3990])
def test_a_body_is_exact_where_no_one_or_two_sentences_close_the_gap(target):
    words = CountedBank.counted(WordSizer(), text.sentence_bank())
    assert words is not None
    for seed in range(200):
        body, tokens = words.draw(random.Random(seed), target)
        assert tokens == target == len(body.split())


def test_long_bodies_come_in_paragraphs_of_three_to_seven_sentences(bank):
    body, _ = bank.draw(random.Random(1), 4000)
    paragraphs = body.split(PARAGRAPH_BREAK)
    assert len(paragraphs) > 20
    for paragraph in paragraphs[:-1]:  # the last one takes the closing sentences
        assert 3 <= len(_pieces(paragraph, bank)) <= 7


def test_a_target_below_any_sentence_gets_the_closest_one(bank):
    shortest = min(bank.by_tokens)
    body, tokens = bank.draw(random.Random(3), shortest - 1)
    assert tokens == shortest and body in bank.pieces
    assert bank.draw(random.Random(3), 0) == ("", 0)


class _DummyPrefixSizer:
    """Counts like a SentencePiece tokenizer that adds a dummy prefix: one token more per
    text counted, so the sum of the parts is not the count of the whole."""

    method, local = "server", False

    def __init__(self, inner: HFSizer) -> None:
        self.inner = inner
        self.calls = 0

    def count(self, text_: str) -> int:
        self.calls += 1
        return self.inner.count(text_) + 1


def test_counts_that_do_not_add_up_leave_no_bank_after_a_few_counts(bpe_sizer):
    sizer = _DummyPrefixSizer(bpe_sizer)
    assert CountedBank.counted(sizer, text.sentence_bank()) is None
    assert sizer.calls < 60


def _cold_start(sizer, material=None):
    return make_workload(
        "cold_start",
        builtin_scenarios()["cold_start"],
        seed=1,
        run_id="r",
        worker_id="w",
        user_id=1,
        sizer=sizer,
        material=material or SharedMaterial(sizer),
        max_model_len=32768,
        max_tokens=64,
    )


def test_cold_start_counts_the_bank_at_prepare_and_nothing_per_request(tokenize_server, bpe_sizer):
    sizer = ServerSizer(tokenize_server.root + "/tokenize", "m")
    workload = _cold_start(sizer)
    built = tokenize_server.calls
    workload.prepare()
    assert tokenize_server.calls - built == len(text.sentence_bank()) + 2  # + break, check
    requests = [workload.next_request() for _ in range(40)]
    after_first = tokenize_server.calls
    requests += [workload.next_request() for _ in range(40)]
    assert tokenize_server.calls == after_first  # the tag's ratio and joints were learnt
    for request in requests:
        # exact but for the tag, whose length is estimated from a ratio once calibrated
        assert abs(bpe_sizer.count(request.prompt) - 4000) <= 3


def test_without_a_bank_cold_start_counts_each_prompt_whole(bpe_sizer):
    sizer = _DummyPrefixSizer(bpe_sizer)
    workload = _cold_start(sizer)
    workload.prepare()
    for _ in range(5):  # the first texts calibrate the ratio
        workload.next_request()
    before = sizer.calls
    request = workload.next_request()
    assert sizer.calls == before + 1  # the verifying count
    assert text.REPORT_REQUEST in request.prompt


def _pieces(paragraph: str, bank: CountedBank) -> list[str]:
    """The bank's pieces a paragraph is made of, matched greedily from its start."""
    found, rest = [], paragraph
    longest_first = sorted(bank.pieces, key=len, reverse=True)
    while rest:
        piece = next(p for p in longest_first if rest.startswith(p))
        found.append(piece)
        rest = rest[len(piece) :]
    return found


def test_run_json_says_how_cold_start_prompts_were_sized(bpe_sizer):
    banked, whole = SharedMaterial(bpe_sizer), SharedMaterial(_DummyPrefixSizer(bpe_sizer))
    assert banked.bank_sizing() is None  # no cold-start prompt made
    _cold_start(bpe_sizer, banked).prepare()
    _cold_start(whole.sizer, whole).prepare()
    assert banked.bank_sizing().startswith("drawn from the sentence bank")
    assert whole.bank_sizing().startswith("counted whole, one count per prompt")
