"""The pre-flight request: one short completion before any load, so a target that cannot
serve the run is one line and exit code 2, not thousands of failed requests.

    problem = preflight(base_url, endpoint="chat", model="tiny", api_key=None,
                        timeouts=Timeouts(), timeout_s=30)
    if problem:
        raise KvswarmError(problem.message)

It sends what the run will send (the same endpoint, model, key and streaming), asking for
one token, and reads the answer with kvswarm's own client, so what it judges is exactly
what the run would meet: a target that refuses connections, one that is not
OpenAI-compatible (an HTML page, 404 on the endpoint), one that accepts and never
answers, a rejected key, model or request (400, 401, 403). What may be the moment rather
than the target (429, 5xx, a cut or malformed stream) is a warning, not a verdict: the
run goes on and counts what it meets. `--kv-skip-preflight` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvswarm.client import CompletionRequest, StreamingClient, StreamResult, Timeouts

__all__ = ["PREFLIGHT_REQUEST_ID", "PREFLIGHT_TIMEOUT_S", "PreflightProblem", "preflight"]

# The pre-flight's `X-Request-Id`: the one request the server sees that requests.csv does
# not hold (it is no part of the load), told apart in the server's logs by this id.
PREFLIGHT_REQUEST_ID = "kvswarm-preflight"

# How long the pre-flight waits for its one token, at most (the config's timeouts, if
# shorter, win): a target that accepts and never answers is found within this.
PREFLIGHT_TIMEOUT_S = 30.0
# Answers that say the target cannot serve the run, whatever the moment: the run stops.
# Anything else (429, 5xx, a cut or malformed stream, an error in the stream) may be
# the moment, not the target: a warning, and the run goes on and counts what it meets.
_FATAL = frozenset({"connect", "timeout_ttft", "http_400", "http_401", "http_403", "http_404"})
_SKIP = "(--kv-skip-preflight skips this check)"


@dataclass(frozen=True)
class PreflightProblem:
    """What the pre-flight found: `fatal` stops the run before any load; otherwise it is
    a warning."""

    message: str
    fatal: bool = True


def preflight(
    base_url: str,
    *,
    endpoint: str,
    model: str,
    api_key: str | None,
    timeouts: Timeouts,
    timeout_s: float = PREFLIGHT_TIMEOUT_S,
) -> PreflightProblem | None:
    """None when the target streamed a completion; else what is wrong, in one line."""
    bounded = replace(
        timeouts,
        connect_s=min(timeouts.connect_s, timeout_s),
        ttft_s=min(timeouts.ttft_s, timeout_s),
        idle_s=min(timeouts.idle_s, timeout_s),
        total_s=min(timeouts.total_s, timeout_s),
    )
    client = StreamingClient(base_url, api_key=api_key, timeouts=bounded)
    request = CompletionRequest(
        endpoint=endpoint,
        model=model,
        max_tokens=1,
        messages=[{"role": "user", "content": "Hello"}],
        prompt="Hello",
        request_id=PREFLIGHT_REQUEST_ID,
    )
    try:
        result = client.complete(request)
    finally:
        client.close()
    target = client.target
    url = f"POST {target.scheme}://{target.host_header}{target.path(endpoint)}"
    return _judge(result, url, bounded.ttft_s)


def _judge(result: StreamResult, url: str, waited_s: float) -> PreflightProblem | None:
    failure = result.failure
    if result.ok or failure == "empty":
        return None
    silent = failure == "timeout_total" and result.ttft_s is None  # not a token, ever
    if failure in _FATAL or silent or _not_a_stream(result):
        return PreflightProblem(f"pre-flight: {url}: {_explain(result, waited_s)} {_SKIP}")
    return PreflightProblem(
        f"pre-flight: {url}: {_explain(result, waited_s)}; the run goes on and counts what "
        "it meets",
        fatal=False,
    )


def _not_a_stream(result: StreamResult) -> bool:
    """A 200 whose body is not an event stream (an HTML page): not an OpenAI server."""
    content_type = result.headers.get("content-type", "text/event-stream").lower()
    return result.status_code == 200 and not content_type.startswith("text/event-stream")


def _explain(result: StreamResult, waited_s: float) -> str:
    failure, error = result.failure, result.error
    if failure == "connect":
        return f"cannot connect ({error}): is the server up and --host right?"
    if failure == "http_404":
        return (
            f"HTTP 404 ({error}): check target.model, --host (with or without /v1) and "
            "target.endpoint (chat or completions)"
        )
    if failure in ("http_401", "http_403"):
        return f"HTTP {result.status_code} ({error}): check the API key (--kv-api-key-file)"
    if failure.startswith("http_"):
        return f"HTTP {result.status_code}: {error}"
    if failure in ("timeout_ttft", "timeout_idle", "timeout_total"):
        return f"no token within {waited_s:g} s ({failure}): the server accepts but does not answer"
    if failure == "bad_chunk":
        return f"not an OpenAI-compatible stream ({error})"
    return f"{failure}: {error}"
