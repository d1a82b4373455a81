"""`Snapshot`: one reading of one metrics source, and the deltas between two readings.

Samples are keyed `name{label="value",...}` (labels sorted, values escaped as in the
Prometheus text format), the form run.json keeps. Parsing is prometheus-client's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Snapshot",
    "counter_deltas",
    "parse_metrics",
    "sample_key",
    "snapshot_of",
    "split_key",
]

_ACCUMULATING_SUFFIXES = ("_total", "_sum", "_count", "_bucket")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Snapshot:
    """One reading of a source: sample key -> value, or `error` saying why there is none."""

    url: str
    samples: dict[str, float] = field(default_factory=dict)
    # Sample keys whose value only grows (counters, histogram/summary sums and counts).
    accumulating: frozenset[str] = frozenset()
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.samples)

    def series(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        """(labels, value) of every sample called `name`."""
        for key, value in self.samples.items():
            sample_name, labels = split_key(key)
            if sample_name == name:
                yield labels, value

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of every sample called `name` whose labels include `labels`."""
        total = None
        for sample_labels, value in self.series(name):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + value
        return total

    def gauges(self) -> dict[str, float]:
        """Every sample that is not accumulating (gauges, info), by key."""
        return {k: v for k, v in sorted(self.samples.items()) if k not in self.accumulating}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample_key(name: str, labels: dict[str, str]) -> str:
    """`name{a="1",b="2"}` (labels sorted), or `name` without labels."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def split_key(key: str) -> tuple[str, dict[str, str]]:
    """The name and labels of a sample key made by `sample_key`."""
    name, _, rest = key.partition("{")
    labels = {
        match[1]: _UNESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], match[2])
        for match in _LABEL.finditer(rest)
    }
    return name, labels


def parse_metrics(text: str, url: str = "") -> Snapshot:
    """Parse Prometheus exposition text with prometheus-client's parser."""
    return snapshot_of(text_string_to_metric_families(text), url)


def snapshot_of(families: Iterable[Metric], url: str = "") -> Snapshot:
    """The Snapshot of metric families already parsed (by prometheus-client's parser)."""
    samples: dict[str, float] = {}
    accumulating: set[str] = set()
    for family in families:
        grows = family.type in ("counter", "histogram", "summary", "gaugehistogram")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = sample_key(sample.name, sample.labels)
            samples[key] = float(sample.value)
            # An untyped `_total` is a counter by naming convention (some exporters put
            # the TYPE line on the name without the suffix, which parses as untyped).
            untyped_counter = family.type == "unknown" and sample.name.endswith("_total")
            if (grows and sample.name.endswith(_ACCUMULATING_SUFFIXES)) or untyped_counter:
                accumulating.add(key)
    return Snapshot(url=url, samples=samples, accumulating=frozenset(accumulating))


def counter_deltas(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """end - start for every accumulating sample of `end`.

    A sample that first appears after `start` (a labelled counter created by the first
    request of its kind) counts from zero: its delta is its end value.
    """
    return {key: end.samples[key] - start.samples.get(key, 0.0) for key in sorted(end.accumulating)}
