"""Locust glue: kvswarm's command-line options, its custom events, and the run's records.

Importing this module (every kvswarm locustfile does, through `kvswarm.users`) adds the
`--kv-*` options to Locust's parser (and so to the web UI's start form) and listens to
Locust's events:

- `init`: loads and validates the config (a bad one ends the process with one line, exit 2);
- `test_start` / `test_stop`: opens and closes `results/<run-id>/` (run.json, requests.csv,
  summary.txt) on the process that owns the results (standalone or master);
- `quit`: prints the kvswarm summary after Locust's own tables.

Every finished request is reported with `report(environment, record)`: one Locust request
event for the request (type `LLM`, response time = E2E, length = output tokens) and custom
`TTFT`, `TPOT` and one `ITL` per gap, all named by scenario, so they appear in the web UI,
the headless tables and `--csv` files.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import gevent
from locust import events
from locust.env import Environment
from locust.event import EventHook
from locust.runners import MasterRunner, WorkerRunner

from kvswarm.client import Timeouts, api_key_from_environment
from kvswarm.config import Config, load_config, redacted
from kvswarm.errors import KvswarmError
from kvswarm.live import LiveLatency
from kvswarm.records import RequestRecord
from kvswarm.rundir import RunDirectory
from kvswarm.shipping import MasterCollector, WorkerOutbox
from kvswarm.window import ServerWindow

REQUEST_TYPE = "LLM"
# Bounds on deferred reporting (see `report`).
MAX_PENDING_REPORTS = 64
MAX_REPORT_DELAY_S = 0.5
ABORT_MESSAGE = "kvswarm_abort"
MODES = ("non_disaggregated", "pd_disaggregated")

logger = logging.getLogger(__name__)

run_closing = EventHook()
"""Fired on the results-owning process just before a run's files are closed, with
`environment` and `meta` (run.json's dict): listeners add their sections to `meta`.
Every worker's records and messages have arrived by then."""


@dataclass
class Session:
    """What one Locust process knows about the kvswarm run it takes part in."""

    config: Config
    config_path: str | None
    mode: str
    endpoint: str
    api_key: str | None
    results_dir: Path
    run_id: str | None
    worker_id: str = "local"
    run: RunDirectory | None = None
    summary_text: str = ""
    live: LiveLatency = field(default_factory=LiveLatency)
    server: ServerWindow | None = None
    aborted: bool = False
    pending_reports: deque[RequestRecord] = field(default_factory=deque)
    oldest_pending_t: float = 0.0
    reporter: Any = None
    outbox: WorkerOutbox | None = None
    collector: MasterCollector | None = None
    _flusher: Any = None
    _users_started: int = 0

    @property
    def timeouts(self) -> Timeouts:
        t = self.config.timeouts
        return Timeouts(connect_s=t.connect_s, ttft_s=t.ttft_s, idle_s=t.idle_s)

    def base_url(self, host: str | None) -> str:
        """Locust's --host wins; else the mode's URL from the config; else target.base_url."""
        return host or self.config.base_url_for(self.mode)  # type: ignore[arg-type]

    def keep(self, request: RequestRecord) -> None:
        """Append a record to the open run and to the live distributions."""
        if self.run is not None:
            self.run.add(request)
            self.live.add(request)

    def next_user_id(self) -> int:
        self._users_started += 1
        return self._users_started


_sessions: WeakKeyDictionary[Environment, Session] = WeakKeyDictionary()


def recording_session(
    environment: Environment, results_dir: Path, config: Config | None = None
) -> Session:
    """A session with an open run for an environment that Locust's `init` never saw
    (benchmarks and tests that drive kvswarm's reporting without the locust command)."""
    state = Session(
        config=config or Config(),
        config_path=None,
        mode="non_disaggregated",
        endpoint="chat",
        api_key=None,
        results_dir=results_dir,
        run_id=None,
    )
    state.run = RunDirectory.create(results_dir, mode=state.mode)
    _sessions[environment] = state
    return state


def session(environment: Environment) -> Session:
    """The kvswarm session of a Locust environment (created by the `init` listener)."""
    try:
        return _sessions[environment]
    except KeyError:
        raise KvswarmError(
            "kvswarm is not initialised for this Locust environment: import kvswarm.users "
            "in the locustfile"
        ) from None


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--kv-config",
        default="",
        env_var="KVSWARM_CONFIG",
        help="kvswarm YAML config (default: built-in defaults, as configs/test_config.yaml)",
    )
    parser.add_argument(
        "--kv-mode",
        default="non_disaggregated",
        choices=MODES,
        help="deployment mode under test; picks deployment_modes.<mode>.base_url "
        "unless --host is given",
    )
    parser.add_argument(
        "--kv-results",
        default="",
        env_var="KVSWARM_RESULTS",
        help="directory for <run-id>/ (requests.csv, run.json, summary.txt); "
        "default: the config's results.dir (results)",
    )
    parser.add_argument(
        "--kv-endpoint",
        default="",
        choices=["", "chat", "completions"],
        help="API to call: chat (/v1/chat/completions) or completions (/v1/completions); "
        "default from the config",
    )
    parser.add_argument(
        "--kv-run-id",
        default="",
        help="name of the run directory (default: UTC time and mode)",
    )
    parser.add_argument(
        "--kv-api-key",
        default="",
        is_secret=True,
        help="API key sent as a bearer token (default: config target.api_key, "
        "$KVSWARM_API_KEY or $OPENAI_API_KEY); never written to results",
    )


def fail(message: str) -> None:
    """Stop the process before the test starts: one line on stderr, exit code 2."""
    print(f"kvswarm: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _option(environment: Environment, name: str, default: Any = None) -> Any:
    options = environment.parsed_options
    return getattr(options, name, default) if options is not None else default


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    config_path = _option(environment, "kv_config") or None
    try:
        config = load_config(config_path)
    except KvswarmError as exc:
        fail(str(exc))
        return
    api_key = (
        _option(environment, "kv_api_key") or config.target.api_key or api_key_from_environment()
    )
    state = Session(
        config=config,
        config_path=config_path,
        mode=_option(environment, "kv_mode") or "non_disaggregated",
        endpoint=_option(environment, "kv_endpoint") or config.target.endpoint,
        api_key=api_key,
        results_dir=Path(_option(environment, "kv_results") or config.results.dir),
        run_id=_option(environment, "kv_run_id") or None,
    )
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        state.worker_id = runner.client_id
        state.outbox = WorkerOutbox(environment)
    elif isinstance(runner, MasterRunner):
        state.collector = MasterCollector(environment, state)
        state.collector.install()
        runner.register_message(
            ABORT_MESSAGE, lambda environment, msg, **_: abort(environment, msg.data["message"])
        )
    _sessions[environment] = state
    if environment.web_ui is not None:
        _add_web_routes(environment, state)


def _add_web_routes(environment: Environment, state: Session) -> None:
    app = environment.web_ui.app

    @app.route("/kvswarm/live")
    def kvswarm_live() -> Any:
        """Live TTFT/TPOT/ITL/E2E percentiles (ms) per scenario, across all workers."""
        from flask import jsonify

        return jsonify(
            {
                "run": str(state.run.path) if state.run else None,
                "requests": state.live.requests,
                "percentiles_ms": state.live.percentiles_ms(),
            }
        )


def abort(environment: Environment, message: str) -> None:
    """End the whole test for a problem the user must fix: one line, exit code 2.

    On a worker, the master is told and ends the test for every worker."""
    state = session(environment)
    if state.aborted:
        return
    state.aborted = True
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(ABORT_MESSAGE, {"message": message})
        return
    print(f"kvswarm: {message}", file=sys.stderr, flush=True)
    environment.process_exit_code = 2
    # Not from this greenlet: quitting kills the users, and the caller may be one.
    if _option(environment, "headless"):
        gevent.spawn(runner.quit)
    else:
        gevent.spawn(runner.stop)


def owns_results(environment: Environment) -> bool:
    """The process that writes results: a standalone run or the master, never a worker."""
    return not isinstance(environment.runner, WorkerRunner)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if not owns_results(environment):
        return
    state = session(environment)
    options = environment.parsed_options
    base_url = state.base_url(environment.host)
    state.server = ServerWindow.open(
        base_url, state.config.target.engine, dict(state.config.metrics_endpoints)
    )
    meta = {
        "config_path": state.config_path,
        "config": redacted(state.config),
        "target": base_url,
        "engine": state.server.engine,
        "endpoint": state.endpoint,
        "model": state.config.model_name,
        "distributed": isinstance(environment.runner, MasterRunner),
        "locust": {
            "users": getattr(options, "num_users", None),
            "spawn_rate": getattr(options, "spawn_rate", None),
            "run_time_s": getattr(options, "run_time", None),
            "user_classes": sorted(cls.__name__ for cls in environment.user_classes),
            "headless": getattr(options, "headless", None),
        },
    }
    state.run = RunDirectory.create(
        state.results_dir,
        mode=state.mode,
        run_id=state.run_id,
        flush_interval_s=state.config.results.flush_interval_s,
        meta=meta,
    )
    state.run.meta["window"]["warmup_s"] = state.config.results.warmup_s
    state.live = LiveLatency()
    if state.collector is not None:
        state.collector.start()
    state._flusher = gevent.spawn(
        _flush_periodically, state.run, state.config.results.flush_interval_s
    )
    logger.info("kvswarm: recording to %s", state.run.path)


def _flush_periodically(run: RunDirectory, interval_s: float) -> None:
    # Appends flush on their own; this covers quiet spells (a stalled server).
    while True:
        gevent.sleep(interval_s)
        run.writer.flush()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    # Before anything else (a worker's final batch is shipped by a later listener).
    drain_reports(environment)
    if not owns_results(environment):
        return
    state = session(environment)
    run = state.run
    if run is None:
        return
    if state.collector is not None:
        run.meta.update(state.collector.collect_final_batches())
    if state.server is not None:
        run.meta["server"] = state.server.close()
        state.server = None
    run_closing.fire(environment=environment, meta=run.meta)
    if state._flusher is not None:
        state._flusher.kill(block=False)
        state._flusher = None
    run.finish()
    state.run = None
    state.summary_text = write_summary(run.path)


def write_summary(run_path: Path) -> str:
    """Compute the exact summary from the run's files and write summary.txt."""
    # analysis imports pandas: loaded here, at the end of a run, not on every worker's start.
    from kvswarm.analysis.runs import SUMMARY_TXT, load_run
    from kvswarm.analysis.summary import format_summary, summarize

    text = format_summary(summarize(load_run(run_path)), str(run_path))
    (run_path / SUMMARY_TXT).write_text(text, encoding="utf-8")
    return text


@events.quit.add_listener
def _on_quit(**_kwargs: Any) -> None:
    for state in list(_sessions.values()):
        if state.summary_text:
            print("\n" + state.summary_text, end="", flush=True)


def record(environment: Environment, request: RequestRecord) -> None:
    """Keep a finished request: appended to the run's requests.csv, or, on a worker,
    shipped to the master, which appends it there."""
    state = session(environment)
    if state.outbox is not None:
        state.outbox.add(request)
    else:
        state.keep(request)


def report(environment: Environment, request: RequestRecord) -> None:
    """Record a finished request and report it to Locust's statistics.

    The work is deferred to a reporter greenlet that handles one request each time the
    event loop is idle: when many requests end at once, their bookkeeping would
    otherwise delay the receive timestamps of other users' tokens. A loop that is never
    idle (a saturated load generator) must not hold records back: once
    `MAX_PENDING_REPORTS` are waiting, or the oldest has waited `MAX_REPORT_DELAY_S`, the
    caller handles them all at once. Everything pending is handled before the test's
    results are closed (`drain_reports`).
    """
    state = session(environment)
    pending = state.pending_reports
    if not pending:
        state.oldest_pending_t = time.monotonic()
    pending.append(request)
    if (
        len(pending) >= MAX_PENDING_REPORTS
        or time.monotonic() - state.oldest_pending_t >= MAX_REPORT_DELAY_S
    ):
        drain_reports(environment)
    elif state.reporter is None:
        state.reporter = gevent.spawn(_report_when_idle, environment, state)


def _report_when_idle(environment: Environment, state: Session) -> None:
    try:
        while state.pending_reports:
            gevent.idle()
            if state.pending_reports:
                report_now(environment, state.pending_reports.popleft())
                state.oldest_pending_t = time.monotonic()
    finally:
        state.reporter = None


def drain_reports(environment: Environment) -> None:
    """Handle every deferred report now (at test stop, before results are closed)."""
    state = session(environment)
    while state.pending_reports:
        report_now(environment, state.pending_reports.popleft())


def report_now(environment: Environment, request: RequestRecord) -> None:
    """Record a request and fire its Locust events (LLM, TTFT, TPOT, one ITL per gap).

    Cancelled requests (the test stopped them) are recorded but not reported to Locust.
    """
    record(environment, request)
    if request.cancelled:
        return
    fire = environment.events.request.fire
    name = request.scenario
    if not request.ok:
        fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(request.e2e_s or 0.0) * 1000.0,
            response_length=0,
            exception=request.failure,
            context={"request_id": request.request_id, "error": request.error},
        )
        return
    context = {"request_id": request.request_id}
    timings = [(REQUEST_TYPE, request.e2e_s)]
    if request.ttft_s is not None:
        timings.append(("TTFT", request.ttft_s))
    if request.tpot_s is not None:
        timings.append(("TPOT", request.tpot_s))
    timings.extend(("ITL", gap) for gap in request.itl_s)
    for request_type, seconds in timings:
        fire(
            request_type=request_type,
            name=name,
            response_time=(seconds or 0.0) * 1000.0,
            # Only the request itself has a length: its output tokens.
            response_length=request.output_tokens if request_type == REQUEST_TYPE else 0,
            exception=None,
            context=context,
        )
