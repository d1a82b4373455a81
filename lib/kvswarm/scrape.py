"""Reading Prometheus text from serving engines (vLLM, llama.cpp, SGLang, the sim, Mooncake).

A run takes a snapshot of each endpoint at the start and at the end of its window and
keeps the deltas of counters (and of histogram/summary `_sum`/`_count`) in run.json. An
unreachable or metric-less endpoint is a warning in run.json, never a failed run.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

_ACCUMULATING_SUFFIXES = ("_total", "_sum", "_count", "_bucket")


@dataclass(frozen=True)
class Snapshot:
    """One scrape of one endpoint: sample key (`name{label="v",...}`) -> value."""

    url: str
    samples: dict[str, float] = field(default_factory=dict)
    # Sample keys whose value only grows (counters, histogram/summary sums and counts).
    accumulating: frozenset[str] = frozenset()
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.samples)

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of every sample called `name` whose labels include `labels`."""
        total = None
        for key, value in self.samples.items():
            sample_name, sample_labels = _split_key(key)
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + value
        return total


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _split_key(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    labels: dict[str, str] = {}
    for part in rest.rstrip("}").split('",'):
        if "=" in part:
            k, _, v = part.partition("=")
            labels[k] = v.strip('"')
    return name, labels


def parse_metrics(text: str, url: str = "") -> Snapshot:
    """Parse Prometheus exposition text with prometheus-client's parser."""
    samples: dict[str, float] = {}
    accumulating: set[str] = set()
    for family in text_string_to_metric_families(text):
        grows = family.type in ("counter", "histogram", "summary", "gaugehistogram")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = _key(sample.name, sample.labels)
            samples[key] = float(sample.value)
            # An untyped `_total` is a counter by naming convention (some exporters put
            # the TYPE line on the name without the suffix, which parses as untyped).
            untyped_counter = family.type == "unknown" and sample.name.endswith("_total")
            if (grows and sample.name.endswith(_ACCUMULATING_SUFFIXES)) or untyped_counter:
                accumulating.add(key)
    return Snapshot(url=url, samples=samples, accumulating=frozenset(accumulating))


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot:
    """GET a /metrics page; failures come back as a Snapshot with `error` set."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return Snapshot(url=url, error=f"HTTP {exc.code} from {url}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Snapshot(url=url, error=f"cannot read {url}: {reason}")
    try:
        snapshot = parse_metrics(text, url)
    except ValueError as exc:
        return Snapshot(url=url, error=f"{url} is not Prometheus text: {exc}")
    if not snapshot.samples:
        return Snapshot(url=url, error=f"{url} has no metrics")
    return snapshot


def deltas(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """end - start for every accumulating sample present in both snapshots."""
    return {
        key: end.samples[key] - start.samples[key]
        for key in sorted(end.accumulating)
        if key in start.samples
    }


def window_report(start: Snapshot, end: Snapshot) -> dict[str, Any]:
    """What run.json keeps of one endpoint over the window."""
    report: dict[str, Any] = {"url": end.url or start.url}
    warnings = [s.error for s in (start, end) if s.error]
    if warnings:
        report["warning"] = "; ".join(dict.fromkeys(warnings))
    if start.ok and end.ok:
        report["deltas"] = deltas(start, end)
        report["end"] = {k: v for k, v in sorted(end.samples.items()) if k not in end.accumulating}
    return report
