"""`MirrorCollector`: the stack's own metrics, re-exposed on kvswarm's exporter.

Each metrics source's last scrape (prometheus-client's parsed families) is served again
with a `source` label naming the endpoint (`target`, `prefiller`, `decoder`,
`mooncake_master`...), so one scrape of the exporter shows the load and the cache side by
side. Families of the same name from several sources become one family (the exposition
format allows each name once); a source's own `source` label is kept as
`exported_source`. Sources are dropped when a run closes (`clear`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["SOURCE_LABEL", "MirrorCollector"]

SOURCE_LABEL = "source"


class MirrorCollector(Collector):
    """The last families read from each source, served with a `source` label.

    `own`: names the exporter serves itself; a mirrored family of such a name is left out
    (it would clash with kvswarm's own).
    """

    def __init__(self, own: frozenset[str] = frozenset()) -> None:
        self._own = own
        self._families: dict[str, Sequence[Metric]] = {}

    def update(self, source: str, families: Sequence[Metric]) -> None:
        """Replace `source`'s families (a failed scrape keeps the previous ones)."""
        self._families[source] = families

    def clear(self) -> None:
        self._families = {}

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._families)

    def describe(self) -> list[Metric]:
        # What is mirrored changes from scrape to scrape: never checked on register.
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for source, families in list(self._families.items()):
            for family in families:
                if family.name in self._own or family.name.endswith("_created"):
                    continue
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                elif target.type != family.type:
                    continue  # another source's family of that name has another type
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = dict(sample.labels)
                    if SOURCE_LABEL in labels:
                        labels["exported_source"] = labels.pop(SOURCE_LABEL)
                    labels[SOURCE_LABEL] = source
                    target.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from merged.values()
