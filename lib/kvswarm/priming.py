"""The prime pass (`--kv-prime`): every shared prefix sent once before the load, so the
measured phase starts with the server's cache warm.

    outcome = prime(requests, base_url, endpoint="chat", model="m", api_key=None,
                    timeouts=Timeouts())

Each workload gives its prime requests (`Workload.prime_requests`: each pool prefix as
the load sends it, then a short question); they go one after another, asking for one
token, with `X-Request-Id: kvswarm-prime-<n>`, and are no part of the load (requests.csv
does not hold them). Cold-start scenarios have no shared prefix and send nothing. In a
fleet every worker primes before its users start, so no worker's load can overtake the
pass (the second and later workers' primes are hits themselves).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kvswarm.client import CompletionRequest, StreamingClient, Timeouts
from kvswarm.workloads.request import PromptRequest

__all__ = ["PRIME_REQUEST_PREFIX", "PrimeOutcome", "prime"]

PRIME_REQUEST_PREFIX = "kvswarm-prime-"


@dataclass
class PrimeOutcome:
    """What the pass sent: per scenario, the prefixes primed; the failures, by category."""

    primed: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(len(ids) for ids in self.primed.values()) + sum(self.failed.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "prefixes": {scenario: len(ids) for scenario, ids in sorted(self.primed.items())},
            "failed": dict(sorted(self.failed.items())),
            "seconds": round(self.seconds, 3),
        }


def prime(
    requests: Iterable[PromptRequest],
    base_url: str,
    *,
    endpoint: str,
    model: str,
    api_key: str | None,
    timeouts: Timeouts,
) -> PrimeOutcome:
    """Send each request for one token; a prefix whose request succeeded is primed."""
    client = StreamingClient(base_url, api_key=api_key, timeouts=timeouts)
    outcome = PrimeOutcome()
    try:
        for number, request in enumerate(requests):
            result = client.complete(
                CompletionRequest(
                    endpoint=endpoint,
                    model=model,
                    max_tokens=1,
                    messages=request.messages,
                    prompt=request.prompt,
                    request_id=f"{PRIME_REQUEST_PREFIX}{number}",
                )
            )
            outcome.seconds += result.e2e_s or 0.0
            if result.ok:
                outcome.primed.setdefault(request.scenario, []).append(request.prefix_id)
            else:
                outcome.failed[result.failure] = outcome.failed.get(result.failure, 0) + 1
    finally:
        client.close()
    return outcome
