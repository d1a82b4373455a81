"""Pools of shared prefixes, and what the workloads of one process share.

A pool holds `pool_size` shared prefixes of one scenario (documents, codebases, templates,
openers). Item `i` is the text stream `generator(seeded(seed, scenario, "item", i))` cut to
a length drawn from `seeded(seed, scenario, "length", i)`: every process with the same seed
and the same sizer produces byte-identical items, and processes whose sizers disagree still
produce prefixes of the same stream. Items are generated on first use and cached for the
life of the process, so memory is bounded by the pools' own sizes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from kvswarm.config import ScenarioConfig
from kvswarm.textparts import SharedText
from kvswarm.tokens import TextFitter, TokenSizer
from kvswarm.workloads.bank import CountedBank
from kvswarm.workloads.text import seeded, sentence_bank

__all__ = [
    "PoolItem",
    "PrefixPool",
    "SeenPrefixes",
    "SharedMaterial",
    "TextGenerator",
    "shared_material",
]

TextGenerator = Callable[[random.Random], Iterator[str]]


@dataclass(frozen=True)
class PoolItem:
    """One shared prefix. `prefix_id` is `<family>-<index>-<digest of the text>`; `shared`
    is the text as requests send it (JSON-encoded once, see kvswarm.textparts)."""

    prefix_id: str
    index: int
    text: str
    tokens: int  # as counted by the sizer
    target_tokens: int
    shared: SharedText = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shared", SharedText(self.text))


class PrefixPool:
    """`size` deterministic shared prefixes of one scenario, generated on first use."""

    def __init__(
        self,
        scenario: str,
        family: str,
        generator: TextGenerator,
        config: ScenarioConfig,
        seed: int,
        fitter: TextFitter,
    ) -> None:
        self.scenario = scenario
        self.family = family
        self.generator = generator
        self.size = config.pool_size
        self.tokens_min = config.shared_tokens_min
        self.tokens_max = config.shared_tokens_max
        self.seed = seed
        self.fitter = fitter
        self._items: dict[int, PoolItem] = {}

    def __len__(self) -> int:
        return self.size

    def item(self, index: int) -> PoolItem:
        """Item `index` (0 <= index < size), generating and counting it on first use."""
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = self._generate(index)
        return item

    def prepare(self) -> None:
        """Generate every item now (e.g. at test start, before measuring)."""
        for index in range(self.size):
            self.item(index)

    def seen_and_unseen(self, seen: SeenPrefixes) -> tuple[list[int], list[int]]:
        """The indices of the items in `seen`, and of the others (generating every item)."""
        seen_indices: list[int] = []
        unseen_indices: list[int] = []
        for index in range(self.size):
            (seen_indices if self.item(index).prefix_id in seen else unseen_indices).append(index)
        return seen_indices, unseen_indices

    def _generate(self, index: int) -> PoolItem:
        if not 0 <= index < self.size:
            raise IndexError(f"pool item {index} of {self.size}")
        target = seeded(self.seed, self.scenario, "length", index).randint(
            self.tokens_min, self.tokens_max
        )
        stream = self.generator(seeded(self.seed, self.scenario, "item", index))
        fitted = self.fitter.fit(stream, target, self.generator.__name__, exact=True)
        digest = hashlib.blake2b(fitted.text.encode(), digest_size=4).hexdigest()
        prefix_id = f"{self.family}-{index}-{digest}"
        return PoolItem(prefix_id, index, fitted.text, fitted.tokens, target)


class SeenPrefixes:
    """The pool prefixes the fleet has already sent, as far as this process knows.

    The basis of `expected_hit` (see kvswarm.workloads.reuse). A workload of this process
    marks a prefix with `first_use`, which calls `on_first_use(prefix_id)` the first time,
    so the process can tell the others; a first use reported by another process arrives
    through `mark_seen`, which calls nothing. Without a callback (one process, unit
    tests) first uses stay within the process.
    """

    def __init__(self, on_first_use: Callable[[str], None] | None = None) -> None:
        self.on_first_use = on_first_use
        self._seen: set[str] = set()

    def first_use(self, prefix_id: str) -> bool:
        """Mark `prefix_id` as sent by this process; True if the fleet had not sent it yet
        (then `on_first_use` is called with it)."""
        if prefix_id in self._seen:
            return False
        self._seen.add(prefix_id)
        if self.on_first_use is not None:
            self.on_first_use(prefix_id)
        return True

    def mark_seen(self, prefix_id: str) -> None:
        """Record another process's first use of `prefix_id`."""
        self._seen.add(prefix_id)

    def clear(self) -> None:
        """Forget every prefix (a new run against a server whose cache was reset)."""
        self._seen.clear()

    def __contains__(self, prefix_id: object) -> bool:
        return prefix_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)


class SharedMaterial:
    """What every workload of one process shares for one sizer.

    The fitter (and what it learned about chars/token), the pools, and the set of pool
    prefixes already sent (`seen`: set `material.seen.on_first_use` to tell other
    processes of this one's first uses, and `material.seen.mark_seen` theirs).
    `shared_material(sizer)` gives the process-wide one; tests make their own to start
    from a clean slate.
    """

    def __init__(self, sizer: TokenSizer) -> None:
        self.sizer = sizer
        self.fitter = TextFitter(sizer)
        self.seen = SeenPrefixes()
        self._pools: dict[tuple[object, ...], PrefixPool] = {}
        self._joints: dict[tuple[str, str, str], int] = {}
        self._texts: dict[str, int] = {}
        self._bank: CountedBank | None = None
        self._bank_counted = False

    def counted_bank(self) -> CountedBank | None:
        """The sentence bank counted by this sizer (once per process: ~1,000 counts), or
        None where its counts do not add up (see `kvswarm.workloads.bank`)."""
        if not self._bank_counted:
            self._bank = CountedBank.counted(self.sizer, sentence_bank())
            self._bank_counted = True
        return self._bank

    def bank_sizing(self) -> str | None:
        """How cold-start prompts were sized, for run.json (None: none were made)."""
        if not self._bank_counted:
            return None
        if self._bank is None:
            return (
                "counted whole, one count per prompt (the sizer's counts of the sentence "
                "bank do not add up across sentences)"
            )
        return (
            f"drawn from the sentence bank to the exact length ({len(self._bank.pieces)} "
            "sentences counted once; no count per request)"
        )

    def text_tokens(self, text: str) -> int:
        """A fixed text (a request's standing words) counted by the sizer, once per process."""
        tokens = self._texts.get(text)
        if tokens is None:
            tokens = self._texts[text] = self.sizer.count(text)
        return tokens

    def joint_tokens(self, text: str, left: str, right: str) -> int:
        """The tokens `text` adds between `left` and `right`, counted once per process.

        Separators and turn markers tokenize differently alone than between words (a
        trailing space joins the next word, punctuation can absorb a newline).
        """
        key = (left, text, right)
        tokens = self._joints.get(key)
        if tokens is None:
            count = self.sizer.count
            tokens = max(0, count(left + text + right) - count(left) - count(right))
            self._joints[key] = tokens
        return tokens

    def pool(
        self,
        scenario: str,
        family: str,
        generator: TextGenerator,
        config: ScenarioConfig,
        seed: int,
    ) -> PrefixPool:
        """The pool of `scenario` for this config and seed, created on first use."""
        key = (
            scenario,
            family,
            generator,
            seed,
            config.pool_size,
            config.shared_tokens_min,
            config.shared_tokens_max,
        )
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = PrefixPool(
                scenario, family, generator, config, seed, self.fitter
            )
        return pool


_MATERIALS: dict[int, SharedMaterial] = {}


def shared_material(sizer: TokenSizer) -> SharedMaterial:
    """The process-wide `SharedMaterial` of `sizer` (created on first use)."""
    material = _MATERIALS.get(id(sizer))
    if material is None or material.sizer is not sizer:
        material = _MATERIALS[id(sizer)] = SharedMaterial(sizer)
    return material
