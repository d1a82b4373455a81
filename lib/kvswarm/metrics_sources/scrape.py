"""Reading a Prometheus /metrics page directly (vLLM, llama.cpp, SGLang, the sim, Mooncake)."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from kvswarm.metrics_sources.snapshot import Snapshot, parse_metrics

__all__ = ["ScrapeSource", "read_page", "scrape"]


def read_page(url: str, timeout_s: float = 5.0) -> tuple[str, str]:
    """GET a /metrics page: (text, "") or ("", why it could not be read)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as exc:
        return "", f"HTTP {exc.code} from {url}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return "", f"cannot read {url}: {reason}"


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot:
    """GET a /metrics page; failures come back as a Snapshot with `error` set."""
    text, error = read_page(url, timeout_s)
    if error:
        return Snapshot(url=url, error=error)
    try:
        snapshot = parse_metrics(text, url)
    except ValueError as exc:
        return Snapshot(url=url, error=f"{url} is not Prometheus text: {exc}")
    if not snapshot.samples:
        return Snapshot(url=url, error=f"{url} has no metrics")
    return snapshot


@dataclass(frozen=True)
class ScrapeSource:
    """A `MetricsSource` that GETs one Prometheus text page."""

    name: str
    url: str
    timeout_s: float = 3.0

    def snapshot(self) -> Snapshot:
        return scrape(self.url, self.timeout_s)
