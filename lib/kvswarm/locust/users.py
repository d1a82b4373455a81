"""`LLMUser`: the Locust User every kvswarm scenario builds on."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gevent
from gevent import GreenletExit
from locust import User

from kvswarm.client import CompletionRequest, StreamingClient, StreamResult
from kvswarm.locust.arrivals import monotonic_to_unix
from kvswarm.locust.backoff import Backoff
from kvswarm.locust.binding import plugin_of
from kvswarm.records import CANCELLED, RequestRecord, build_record
from kvswarm.textparts import Text

__all__ = ["LLMUser"]


class LLMUser(User):
    """A simulated user holding one keep-alive connection to the server under test.

    Subclasses write tasks that call `self.send(...)`; every call becomes one record in
    requests.csv and one set of Locust events (LLM, TTFT, TPOT, ITL). `scenario` names
    the rows. A request that the test itself interrupts (users stopped, run ended) is
    recorded as `cancelled`, so the server's count and the results always agree.
    """

    abstract = True
    scenario: str = "default"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.kv = plugin_of(environment)
        settings = self.kv.settings
        self.user_id = self.kv.next_user_id()
        self._sequence = itertools.count(1)
        self.llm = StreamingClient(
            self.host or settings.base_url, api_key=settings.api_key, timeouts=settings.timeouts
        )
        self.backoff = Backoff(settings.options.backoff_max_s)

    def on_stop(self) -> None:
        self.llm.close()

    def send(
        self,
        *,
        messages: Sequence[Mapping[str, Text]] = (),
        prompt: Text = "",
        max_tokens: int | None = None,
        prefix_id: str = "",
        prefix_tokens: int = 0,
        expected_hit: bool = False,
        due_s: float | None = None,
        trace_row: int | None = None,
        exact_output: bool = False,
    ) -> StreamResult:
        """Send one completion request (chat or completions, as configured) and report it.

        `due_s` (`time.monotonic()`): when a timeline (a trace replay) wants it sent;
        without one, an open-loop run's next arrival time, or at once (closed loop).
        `exact_output`: ask for exactly `max_tokens` (`min_tokens` too, where the engine
        takes it; `ignore_eos` is the config's)."""
        kv = self.kv
        settings = kv.settings
        config = settings.config
        generation = config.generation
        request_id = f"{kv.worker_id}-{self.user_id}-{next(self._sequence)}"
        max_tokens = max_tokens or config.max_tokens
        extra: dict[str, Any] = {"temperature": generation.temperature}
        if generation.ignore_eos:
            extra["ignore_eos"] = True
        if exact_output and kv.engine.min_tokens:
            extra["min_tokens"] = max_tokens
        request = CompletionRequest(
            endpoint=settings.endpoint,
            model=config.model_name,
            max_tokens=max_tokens,
            messages=messages,
            prompt=prompt or ("" if settings.endpoint == "chat" else _flatten(messages)),
            stream=generation.stream,
            extra=extra,
            request_id=request_id,
        )
        identity: dict[str, Any] = {
            "request_id": request_id,
            "worker_id": kv.worker_id,
            "user_id": self.user_id,
            "scenario": self.scenario,
            "mode": settings.mode,
            "endpoint": settings.endpoint,
            "prefix_id": prefix_id,
            "prefix_tokens": prefix_tokens,
            "expected_hit": expected_hit,
        }
        if due_s is None and kv.arrivals is not None:
            due_s = kv.arrivals.take()
        if due_s is not None:
            identity["scheduled_unix_s"] = self._wait_until(due_s)
        if trace_row is not None:
            identity["trace_row"] = trace_row
        started = time.time()
        kv.in_flight[self.scenario] += 1
        try:
            result = self.llm.complete(request)
        except GreenletExit:
            if not self.llm.request_sent:
                raise  # stopped before anything was sent: no request to account for
            kv.recorder.record(
                RequestRecord(
                    streamed=request.stream,
                    start_unix_s=started,
                    step=self._step(identity, started),
                    warmup=self.kv.is_warmup(started),
                    failure=CANCELLED,
                    error="stopped by the test before the response ended",
                    **identity,
                )
            )
            raise
        finally:
            kv.in_flight[self.scenario] -= 1
        engine = kv.engine
        if due_s is not None and result.start_unix_s:
            # How late the request started against its schedule (the client's own start:
            # after connecting, just before the request's bytes went).
            identity["send_lag_s"] = max(0.0, result.start_unix_s - identity["scheduled_unix_s"])
        identity["step"] = self._step(identity, result.start_unix_s or started)
        identity["warmup"] = kv.is_warmup(result.start_unix_s or started)
        identity["met_slo"] = config.slo.met_by(
            result.ok, result.ttft_s, result.tpot_s, result.e2e_s
        )
        kv.recorder.report(build_record(result, engine.request_timings(result), **identity))
        if engine.is_context_error(result.status_code, result.error):
            kv.abort(
                f"scenario {self.scenario}: the server rejected a prompt as too long for the "
                f"model's context ({result.error}); set target.max_model_len to the served "
                f"model's context length, or shorten scenarios.{self.scenario}"
            )
        wait_s = self.backoff.after(result)
        if wait_s:
            gevent.sleep(wait_s)
        return result

    def _step(self, identity: dict[str, Any], started_unix_s: float) -> int | None:
        """--kv-steps: the request's step, by its scheduled time in an open loop, else by
        its start."""
        return self.kv.step_at(identity.get("scheduled_unix_s") or started_unix_s)

    @staticmethod
    def _wait_until(due_s: float) -> float:
        """Wait for `due_s` (monotonic); when it is already past (every user was busy), go
        now. The due time on the wall clock."""
        early = due_s - time.monotonic()
        if early > 0:
            gevent.sleep(early)
        return monotonic_to_unix(due_s)


def _flatten(messages: Sequence[Mapping[str, Text]]) -> str:
    """The completions-API form of a chat: the message contents, in order."""
    return "\n\n".join(str(message["content"]) for message in messages)


# Any locustfile that uses LLMUser gets kvswarm's options and its plugin: importing the
# plugin registers them with Locust. At the end, because the plugin's scenario module
# builds on LLMUser.
from kvswarm.locust import plugin as _plugin  # noqa: E402,F401
