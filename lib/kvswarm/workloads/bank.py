"""The sentence bank counted once: unique prompts of an exact length with no count per request.

A cold-start prompt is unique from end to end, so no ratio learned on other texts sizes it
exactly, and counting each one meant a `/tokenize` call per request: an HTTP round trip
on the load generator and the whole prompt tokenized a second time by the server under
test. Instead, every sentence of `text.sentence_bank()` is counted once per process, as it
is joined (after a space), and a prompt's body is drawn sentence by sentence until the
last one brings it to the target exactly.

That holds when counts add up: when the tokenizer splits text at a space before a word,
as byte-level BPEs (GPT-2, Llama 3, Qwen) do. `CountedBank.counted` checks it on a sample
of joined sentences (with a paragraph break among them) and gives None where the sum is not
the count (SentencePiece tokenizers that add a dummy prefix, ratio sizers that round each
piece); the caller then counts each prompt whole.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kvswarm.tokens import TokenSizer

PARAGRAPH_BREAK = "\n\n"
# How many joined sentences the additivity check counts as one text.
CHECK_SENTENCES = 48


@dataclass(frozen=True)
class CountedBank:
    """Sentences (each with its leading space) and their token counts."""

    pieces: tuple[str, ...]
    tokens: tuple[int, ...]
    break_tokens: int  # what a paragraph break adds between two sentences
    by_tokens: dict[int, tuple[int, ...]]  # count -> indices of the sentences of that count
    # reachable[n]: whether some sentences' counts sum to exactly n, for n up to the
    # closing span (`_reachable`); the free draw stops inside it.
    reachable: tuple[bool, ...]

    @classmethod
    def counted(cls, sizer: TokenSizer, sentences: Sequence[str]) -> CountedBank | None:
        """Count every sentence with `sizer`; None when counts do not add up."""
        pieces = tuple(" " + sentence for sentence in sentences)
        # The check first, on the first sentences, so a sizer that fails it costs ~50 counts.
        tokens = [sizer.count(piece) for piece in pieces[:CHECK_SENTENCES]]
        break_tokens = sizer.count(pieces[0] + PARAGRAPH_BREAK + pieces[1]) - tokens[0] - tokens[1]
        half = CHECK_SENTENCES // 2
        sample = "".join(pieces[:half]) + PARAGRAPH_BREAK + "".join(pieces[half:CHECK_SENTENCES])
        if break_tokens < 0 or sizer.count(sample) != sum(tokens) + break_tokens:
            return None
        tokens += [sizer.count(piece) for piece in pieces[CHECK_SENTENCES:]]
        by_tokens: dict[int, list[int]] = {}
        for index, count in enumerate(tokens):
            by_tokens.setdefault(count, []).append(index)
        by_count = {count: tuple(indices) for count, indices in by_tokens.items()}
        return cls(pieces, tuple(tokens), break_tokens, by_count, _reachable(by_count))

    def draw(self, rng: random.Random, target: int) -> tuple[str, int]:
        """Sentences drawn with `rng`, in paragraphs of 3-7, `target` tokens long in all.

        Exact whenever some sentences' counts sum to the target (any target past a few
        sentences' length): the last few sentences are chosen by their counts to close the
        gap, each leaving a rest that others can still close. Returns (text, tokens).
        """
        parts: list[str] = []
        total = 0
        pieces, tokens, size = self.pieces, self.tokens, len(self.pieces)
        uniform = rng.random  # int(uniform() * n): a uniform pick at a third of randrange's cost
        in_paragraph, paragraph = 0, 3 + int(uniform() * 5)
        closable = len(self.reachable) - 1  # every rest the free draw leaves is closable
        # Draw freely while what is left is more than that.
        while target - total > closable:
            if in_paragraph >= paragraph and target - total - self.break_tokens > closable:
                parts.append(PARAGRAPH_BREAK)
                total += self.break_tokens
                in_paragraph, paragraph = 0, 3 + int(uniform() * 5)
            index = int(uniform() * size)
            parts.append(pieces[index])
            total += tokens[index]
            in_paragraph += 1
        for index in self._closing(rng, target - total):
            parts.append(pieces[index])
            total += tokens[index]
        return "".join(parts), total

    def _closing(self, rng: random.Random, left: int) -> list[int]:
        """Sentences whose counts sum to `left`, each drawn among the counts that leave a
        closable rest (the one closest to `left` when no sum makes it)."""
        if left <= 0:
            return []
        counts = sorted(self.by_tokens)
        if not self.reachable[left]:
            closest = min(counts, key=lambda count: (abs(count - left), count))
            return [rng.choice(self.by_tokens[closest])]
        chosen: list[int] = []
        while left > 0:
            count = rng.choice([c for c in counts if c <= left and self.reachable[left - c]])
            chosen.append(rng.choice(self.by_tokens[count]))
            left -= count
        return chosen


def _reachable(by_tokens: dict[int, tuple[int, ...]]) -> tuple[bool, ...]:
    """Which totals up to four longest sentences some sentences' counts sum to exactly. Past
    the first few sentences' worth every total is (counts of 11-17 words leave 18-21
    unreachable, nothing from 22 on), so a free draw that stops within the last longest
    sentence's worth of this span always leaves a rest the closing sentences can make."""
    counts = sorted(by_tokens)
    span = 4 * counts[-1]
    reachable = [True] + [False] * span
    for total in range(1, span + 1):
        reachable[total] = any(c <= total and reachable[total - c] for c in counts)
    return tuple(reachable)
