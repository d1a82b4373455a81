"""The kvswarm plugin: kvswarm bound to one Locust `Environment`, with an explicit lifecycle.

Importing this module (every kvswarm locustfile does) adds the `--kv-*` options to
Locust's parser and one listener to Locust's `init` event, which makes a `KvswarmPlugin`
for the environment. From then on everything hangs on that object and on its
environment's events, in this order:

- `init`: options and config validated (a bad one ends the process with one line and exit
  code 2 before any load), scenario classes narrowed to `--tags`, prompts checked to fit
  the model's context;
- `test_start`: options re-read (the web UI's start form may have changed them; workers get
  the master's), then on the results-owning process (standalone or master) the run
  directory, the server-metrics window and the run's unique id; on every process that
  runs users the token sizer and the shared pools; on every process the loop probe
  (`LoopProbe`: its own event-loop lag and CPU over the measured window);
- each finished request: kept (requests.csv, or shipped to the master) and reported to
  Locust's statistics (`Recorder`, `--kv-itl-events`); on the results owner,
  `events.record_kept` feeds the sinks attached to it (the live histograms, only when the
  web UI serves them);
- `test_stop`: pending reports drained; a worker ships its workload stats, then its final
  batch of records with its loop-probe figures; the results owner waits for every
  worker's final batch, closes the server window, writes run.json's sections (with
  `load_generator`: every process's loop lag and CPU) and the summary;
- `quitting`: a run still open is marked `interrupted` (a signal or a quit ended it);
- `quit`: the summary is printed after Locust's own tables.

Library code raises `KvswarmError`; only the entry points (this module's `init` listener,
the locustfile loader) turn it into one line on stderr and exit code 2; during a test a
problem the user must fix aborts the run (`abort`), which says so in run.json.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import gevent
import locust
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from kvswarm.config import Config, redacted
from kvswarm.engines import EngineProfile, detect_engine, engine_profile
from kvswarm.errors import ConfigError, KvswarmError
from kvswarm.heap import keep_freed_memory
from kvswarm.live import LiveLatency

if TYPE_CHECKING:
    from kvswarm.analysis.runs import Run

# The module, not its names: it may be half-imported here (a locustfile that imports
# kvswarm.locust.scenarios first reaches this module through LLMUser's).
from kvswarm.locust import scenarios as scenario_users
from kvswarm.locust import webui
from kvswarm.locust.arrivals import ArrivalSchedule, TraceSchedule
from kvswarm.locust.batches import RecordBatch
from kvswarm.locust.binding import bind, plugin_of
from kvswarm.locust.clock import ClockOffset, answer_clock_pings
from kvswarm.locust.events import KvswarmEvents
from kvswarm.locust.loopprobe import MASTER_PROBE_INTERVAL_S, PROBE_INTERVAL_S, LoopProbe
from kvswarm.locust.options import (
    FLEET_WORKERS_OPTION,
    MEASURE_START_OPTION,
    REPLAY_START_OPTION,
    RUN_SCENARIOS_OPTION,
    RUN_UID_OPTION,
    KvOptions,
    RunSettings,
    add_arguments,
)
from kvswarm.locust.recorder import Recorder
from kvswarm.locust.shipping import MasterCollector, WorkerOutbox
from kvswarm.locust.steps import StepShape
from kvswarm.locust.upstream import apply_workarounds
from kvswarm.metrics_sources import ServerWindow, Snapshot, scrape
from kvswarm.preflight import preflight
from kvswarm.priming import PrimeOutcome
from kvswarm.records import RequestRecord
from kvswarm.rundir import RunDirectory
from kvswarm.runrecord import FleetSection, LocustSection, ProcessLoad, Window
from kvswarm.urls import metrics_url

__all__ = ["KvswarmPlugin", "exit_with", "plugin_of"]

# Seconds between a test's start and its trace replay's first row: users spawn meanwhile.
REPLAY_GRACE_S = 1.0

ABORT_MESSAGE = "kvswarm_abort"
SUMMARY_TXT = "summary.txt"

logger = logging.getLogger(__name__)


def exit_with(message: str) -> NoReturn:
    """End the process before any load: one line on stderr, exit code 2."""
    print(f"kvswarm: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


class KvswarmPlugin:
    """kvswarm bound to one Locust environment (see the module's docstring for its
    lifecycle). `plugin_of(environment)` finds it; users reach it as `self.kv`."""

    def __init__(self, environment: Environment, settings: RunSettings | None = None) -> None:
        self.environment = environment
        self.events = KvswarmEvents()
        runner = environment.runner
        self.is_worker = isinstance(runner, WorkerRunner)
        self.is_master = isinstance(runner, MasterRunner)
        self.worker_id: str = runner.client_id if self.is_worker else "local"
        self.settings = settings or RunSettings.resolve(
            KvOptions.from_parsed(environment.parsed_options), environment.host
        )
        # The worker's own options, for what the master's cannot give it (a config path
        # that exists only on the master's host).
        self._own_options = self.settings.options
        self.run_uid = ""
        self.block_size: int | None = None
        self.exporter: Any = None
        self.engine: EngineProfile = engine_profile("openai")
        self.recorder = Recorder(
            environment, keep=self._keep, itl_events=self.settings.options.itl_events
        )
        # The live view's histograms: kept only when the web UI can serve them.
        self.live: LiveLatency | None = None
        # Open loop: this process's arrival times (None: closed-loop users).
        self.arrivals: ArrivalSchedule | None = None
        # Trace replays: per scenario, this process's rows and their times.
        self._trace_schedules: dict[str, TraceSchedule] = {}
        # The load's timeline on the wall clock, common to a fleet (the master's, shipped
        # with the spawn message): a trace replay's time 0, and --kv-steps' origin.
        self._replay_start_unix = 0.0
        # Warm-up: requests started before this (wall clock; 0: no time warm-up) and the
        # number of this process's first requests still to flag.
        self._measure_start_unix = 0.0
        self._warmup_left = 0
        self.run: RunDirectory | None = None
        self.server: ServerWindow | None = None
        self.summary_text = ""
        self.probe = LoopProbe(MASTER_PROBE_INTERVAL_S if self.is_master else PROBE_INTERVAL_S)
        self._ending: tuple[str, str] | None = None
        self._signal = ""
        self._timers: list[Any] = []
        self._user_ids = itertools.count(1)
        self.scenarios = scenario_users.ScenarioSetup(self)
        # Requests sent and not yet finished, per scenario, by this process's users.
        self.in_flight: Counter[str] = Counter()
        self.outbox = WorkerOutbox(environment, self.in_flight) if self.is_worker else None
        self.collector: MasterCollector | None = None
        if self.is_master:
            self.collector = MasterCollector(
                environment, self._keep_batch, lambda: self.run is not None
            )
            self.collector.install()
            runner.register_message(ABORT_MESSAGE, self._on_worker_abort)
            answer_clock_pings(runner)
        # A worker: the master's clock against this one, for the fleet's common timeline.
        self.clock: ClockOffset | None = None
        if self.is_worker:
            self.clock = ClockOffset(runner)
            self.clock.measure()
        bind(environment, self)

    @property
    def owns_results(self) -> bool:
        """The process that writes results: a standalone run or the master, never a worker."""
        return not self.is_worker

    def next_user_id(self) -> int:
        return next(self._user_ids)

    # -- binding to Locust ---------------------------------------------------------------

    def attach(self) -> None:
        """Check the test can start, and listen to the environment's events."""
        if self.owns_results:
            # A worker's classes are every scenario of its config; it checks at test start
            # only those the master runs.
            select_by_tags(self.environment)
            scenario_users.ScenarioSetup.check_fit(
                self.settings.config, self.environment.user_classes
            )
        events = self.environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        events.quitting.add_listener(self._on_quitting)
        events.quit.add_listener(self._on_quit)
        if self.owns_results:
            self._attach_exporter()
            webui.watch_html_report(self)
            self._install_step_shape()
        if self.environment.web_ui is not None:
            self._add_web_routes()
            # Fed only when something reads it; a headless run pays nothing for it.
            self.live = LiveLatency()
            self.events.record_kept.add_listener(self._feed_live)
            webui.KvswarmWebUi(self).install()

    def _install_step_shape(self) -> None:
        """`--kv-steps`: kvswarm's step shape runs the test, unless the locustfile has a
        shape of its own (then the two would fight: one line, exit 2)."""
        plan = self.settings.options.steps
        if plan is None:
            return
        environment = self.environment
        if environment.shape_class is not None:
            raise ConfigError(
                f"--kv-steps: the locustfile has its own load shape "
                f"({type(environment.shape_class).__name__}); use one or the other"
            )
        held = int(getattr(environment.parsed_options, "num_users", None) or 1)
        environment.shape_class = StepShape(
            plan,
            timeline_start=lambda: self._replay_start_unix,
            users_for=(lambda _rate: held) if plan.unit != "users" else int,
        )
        environment.shape_class.runner = environment.runner

    def _start_warmup(self) -> None:
        """This test's warm-up: a worker takes the master's window; every process flags
        its share of `results.warmup_requests`."""
        self._measure_start_unix = self._local(self.settings.options.measure_start_unix)
        workers, _ = self._fleet_share()
        self._warmup_left = math.ceil(self.settings.config.results.warmup_requests / workers)

    def _local(self, master_unix_s: float) -> float:
        """A time the master fixed, on this process's clock (a worker's offset applied)."""
        return self.clock.to_local(master_unix_s) if self.clock is not None else master_unix_s

    def is_warmup(self, started_unix_s: float) -> bool:
        """Whether a request that started at `started_unix_s` (and ended now) is warm-up:
        before the measured window, or one of this process's first requests."""
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return True
        return started_unix_s < self._measure_start_unix

    def note_prime(self, outcome: PrimeOutcome) -> None:
        """The prime pass's outcome: in run.json (a standalone run), and in the log."""
        logger.info("kvswarm: prime pass: %s", outcome.as_dict())
        if outcome.failed:
            print(
                f"kvswarm: warning: prime pass: {outcome.requests - sum(outcome.failed.values())}"
                f" of {outcome.requests} prefixes primed; failed: {outcome.failed}",
                file=sys.stderr,
                flush=True,
            )
        if self.run is not None and self.owns_results:
            self.run.update(cache_prime=outcome.as_dict())

    def _record_step_origin(self) -> None:
        """run.json's `options.steps` gets the plan's start on the wall clock."""
        steps = self.run.record.options.get("steps") if self.run is not None else None
        if steps:
            options = {**self.run.record.options}
            options["steps"] = {**steps, "start_unix_s": self._replay_start_unix}
            self.run.update(options=options)

    def step_at(self, unix_s: float) -> int | None:
        """`--kv-steps`: the step a request sent (or scheduled) at `unix_s` belongs to;
        None past the plan's end (sent while the test stopped: in no step)."""
        plan = self.settings.options.steps
        if plan is None:
            return None
        origin = self._replay_start_unix
        return plan.step_at(unix_s - origin if origin else 0.0)

    def _attach_exporter(self) -> None:
        """kvswarm's Prometheus exporter and the per-run server sampler, fed from the
        records this process keeps (on a master: the whole fleet's). Options are read
        here, once: the exporter's port cannot move between tests."""
        from kvswarm.sinks import attach_exporter

        options = self.environment.parsed_options
        self.exporter = attach_exporter(
            self,
            bind=getattr(options, "kv_exporter_bind", None) or "127.0.0.1",
            port=int(getattr(options, "kv_exporter_port", 0) or 0),
            interval_s=float(getattr(options, "kv_server_sample_interval", None) or 5.0),
        )

    def watch_signals(self) -> None:
        """Note SIGTERM and SIGINT, so a run they end says `interrupted` and why.

        Locust's own handling goes on: SIGTERM watchers all fire (gevent), and the
        previous SIGINT handler is called after ours."""
        if threading.current_thread() is not threading.main_thread():
            return
        gevent.signal_handler(signal.SIGTERM, lambda: self._note_signal("SIGTERM"))
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):
            return
        if previous is signal.default_int_handler:
            # Python's own KeyboardInterrupt, thrown into the main greenlet (where Locust
            # waits for the test) from gevent's loop: raised from a handler of ours, it
            # would print a traceback through that handler on every Ctrl-C.
            hub = gevent.get_hub()
            gevent.signal_handler(signal.SIGINT, self._interrupt_main, hub)
            return

        def on_sigint(signum: int, frame: Any) -> None:
            self._note_signal("SIGINT")
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)

    def _note_signal(self, name: str) -> None:
        self._signal = name

    def _interrupt_main(self, hub: Any) -> None:
        self._note_signal("SIGINT")
        hub.parent.throw(KeyboardInterrupt)

    # -- test lifecycle ------------------------------------------------------------------

    def _on_test_start(self, environment: Environment, **_kwargs: Any) -> None:
        self._ending = None
        try:
            self.settings = self._settings_for_this_test()
            self.recorder.itl_events = self.settings.options.itl_events
            self.probe.start(warmup_s=_warmup(self.settings.config))
            self.arrivals = self._arrival_schedule()
            self._trace_schedules = {}
            self._replay_start_unix = self._local(self.settings.options.replay_start_unix)
            self._start_warmup()
            if self.owns_results:
                self._open_run()
            else:
                self.run_uid = self.settings.options.run_uid or (
                    f"{self.worker_id}.{secrets.token_hex(4)}"
                )
                self.engine = engine_profile(self._engine_name())
                if getattr(self.engine, "block_size", None) is not None:
                    target = scrape(metrics_url(self.settings.base_url))
                    self.block_size = self._block_size(target)
            self.scenarios.start()
        except KvswarmError as exc:
            self.abort(str(exc))

    def _arrival_schedule(self) -> ArrivalSchedule | None:
        """Open loop: this process's share of the rate (1/W of a W-worker fleet), on a
        generator of its own (seeded with the config's seed and the worker's index)."""
        plan = self.settings.options.arrival
        if not plan.open_loop or self.is_master:
            return None
        workers, index = self._fleet_share()
        seed = self.settings.config.seed * 1_000 + index
        return ArrivalSchedule(
            plan,
            1.0 / workers,
            seed,
            time.monotonic(),
            steps=self.settings.options.steps,
            timeline_start=lambda: self._replay_start_unix,
        )

    def _fleet_share(self) -> tuple[int, int]:
        """How many processes share the load's schedule, and this one's place among them
        (a standalone process: 1 and 0)."""
        if not self.is_worker:
            return 1, 0
        workers = max(1, self.settings.options.fleet_workers)
        return workers, max(0, getattr(self.environment.runner, "worker_index", 0)) % workers

    def trace_schedule(self, scenario: str, offsets_s: list[float]) -> TraceSchedule:
        """A trace replay's rows for this process (every W-th of a W-worker fleet), on the
        timeline that starts at the fleet's common replay start; made on first use."""
        schedule = self._trace_schedules.get(scenario)
        if schedule is None:
            start_unix = self._replay_start_unix or time.time()
            start = time.monotonic() + (start_unix - time.time())
            workers, index = self._fleet_share()
            schedule = TraceSchedule(offsets_s, index, workers, start)
            self._trace_schedules[scenario] = schedule
        return schedule

    def _settings_for_this_test(self) -> RunSettings:
        options = KvOptions.from_parsed(self.environment.parsed_options)
        if (
            self.is_worker
            and options.config_path
            and not Path(options.config_path).exists()
            and self._own_options.config_path
        ):
            # The master's config file is not on this host: use this worker's own.
            options = KvOptions(**{**vars(options), "config_path": self._own_options.config_path})
        return RunSettings.resolve(options, self.environment.host)

    def _check_model(self) -> None:
        """A target that serves another model than the config names is one line now, not
        a failed request per request (engines that can say: vLLM, the simulator)."""
        check = getattr(self.engine, "check_model", None)
        if check is None:
            return
        settings = self.settings
        problem = check(settings.base_url, settings.config.model_name, api_key=settings.api_key)
        if problem:
            raise KvswarmError(problem)

    def _preflight(self) -> None:
        """One short completion before any load (unless --kv-skip-preflight): a target
        that cannot serve the run stops it in one line; a busy one is a warning."""
        settings = self.settings
        if settings.options.skip_preflight:
            return
        problem = preflight(
            settings.base_url,
            endpoint=settings.endpoint,
            model=settings.config.model_name,
            api_key=settings.api_key,
            timeouts=settings.timeouts,
        )
        if problem is None:
            return
        if problem.fatal:
            raise KvswarmError(problem.message)
        print(f"kvswarm: warning: {problem.message}", file=sys.stderr, flush=True)

    def _reset_cache_if_asked(self) -> dict[str, str] | None:
        """`--kv-reset-cache`: drop the server's prefix cache before the run, so it starts
        cold. An engine that cannot is a one-line warning, not an error: run.json says."""
        if not self.settings.options.reset_cache:
            return None
        outcome = self.engine.reset_prefix_cache(self.settings.base_url)
        if not outcome.ok:
            print(
                f"kvswarm: warning: the prefix cache was not reset ({outcome.status}: "
                f"{outcome.detail}); the run starts with whatever the server holds",
                file=sys.stderr,
                flush=True,
            )
        return outcome.to_dict()

    def _block_size(self, snapshot: Snapshot | None) -> int | None:
        """The server's KV block size, where its engine reports one (vLLM: 128 on CPU)."""
        read = getattr(self.engine, "block_size", None)
        return read(snapshot) if read is not None and snapshot is not None else None

    def _engine_name(self) -> str:
        configured = self.settings.config.target.engine
        if configured != "auto":
            return configured
        return detect_engine(self.settings.base_url, api_key=self.settings.api_key)[0]

    def _open_run(self) -> None:
        settings = self.settings
        config = settings.config
        self.engine = engine_profile(self._engine_name())
        self._check_model()
        # Before the pre-flight: a reset right after a request may find its blocks still
        # held (vLLM refuses the reset then).
        cache_reset = self._reset_cache_if_asked()
        self._preflight()
        # Opened after the pre-flight, so the server's counters over the run leave it out.
        self.server = ServerWindow.open(
            settings.base_url, self.engine.name, dict(config.metrics_endpoints)
        )
        self.block_size = self._block_size(self.server.start.get("target"))
        self.run = RunDirectory.create(
            settings.results_dir,
            mode=settings.mode,
            run_id=settings.options.run_id or None,
            flush_interval_s=config.results.flush_interval_s,
            target=settings.base_url,
            engine=self.engine.name,
            endpoint=settings.endpoint,
            model=config.model_name,
            seed=config.seed,
            config_path=settings.options.config_path,
            config=redacted(config),
            options=settings.options.for_record(),
            locust=self._locust_section(),
            cache_reset=cache_reset,
            fleet=FleetSection(distributed=self.is_master),
        )
        self.run.update(window=Window(self.run.record.window.start_unix_s, None, _warmup(config)))
        self._measure_start_unix = (
            self.run.record.window.measure_start_unix_s if _warmup(config) > 0 else 0.0
        )
        self.run_uid = f"{self.run.path.name}.{secrets.token_hex(4)}"
        if self.environment.parsed_options is not None:
            # Shipped to every worker with the spawn messages that follow.
            options = self.environment.parsed_options
            setattr(options, RUN_UID_OPTION, self.run_uid)
            scenarios = scenario_users.scenario_classes(self.environment.user_classes)
            setattr(options, RUN_SCENARIOS_OPTION, ",".join(cls.scenario for cls in scenarios))
            if self.is_master:
                setattr(options, FLEET_WORKERS_OPTION, self.environment.runner.worker_count)
            # A trace replay's timeline starts once the users have had time to spawn.
            self._replay_start_unix = time.time() + REPLAY_GRACE_S
            setattr(options, REPLAY_START_OPTION, self._replay_start_unix)
            setattr(options, MEASURE_START_OPTION, self._measure_start_unix)
            self._record_step_origin()
        if self.live is not None:
            self.live = LiveLatency()
        if self.collector is not None:
            self.collector.start()
        self._timers = [
            gevent.spawn(_flush_periodically, self.run, config.results.flush_interval_s)
        ]
        if _warmup(config) > 0:
            # At the warm-up's end on the wall clock that requests.csv's start times use.
            measure_at = self.run.record.window.measure_start_unix_s
            self._timers.append(
                gevent.spawn_later(max(0.0, measure_at - time.time()), self.server.mark_measuring)
            )
        self._warn_if_scenarios_get_no_users()
        self.events.run_opened.fire(environment=self.environment, run=self.run)
        logger.info("kvswarm: recording to %s", self.run.path)

    def _locust_section(self) -> LocustSection:
        options = self.environment.parsed_options
        run_time = getattr(options, "run_time", None)
        return LocustSection(
            users=getattr(options, "num_users", None),
            spawn_rate=getattr(options, "spawn_rate", None),
            run_time_s=float(run_time) if run_time else None,
            user_classes=tuple(sorted(cls.__name__ for cls in self.environment.user_classes)),
            tags=tuple(getattr(options, "tags", None) or ()),
            exclude_tags=tuple(getattr(options, "exclude_tags", None) or ()),
            headless=getattr(options, "headless", None),
        )

    def _warn_if_scenarios_get_no_users(self) -> None:
        users = getattr(self.environment.parsed_options, "num_users", None)
        active = [
            cls
            for cls in scenario_users.scenario_classes(self.environment.user_classes)
            if cls.weight
        ]
        if users and active and users < len(active) and self.environment.shape_class is None:
            print(
                f"kvswarm: warning: {users} user(s) for {len(active)} scenarios: "
                f"{len(active) - users} scenario(s) will send nothing; use -u {len(active)} or "
                f"more, or pick scenarios by class name or --tags",
                file=sys.stderr,
                flush=True,
            )

    def _keep(self, request: RequestRecord) -> None:
        """A finished request: to the master (worker), or to the open run."""
        if self.outbox is not None:
            self.outbox.add(request)
        elif self.run is not None:
            self.run.add(request)
            self.events.record_kept.fire(record=request)

    def _keep_batch(self, batch: RecordBatch) -> None:
        """A worker's batch, on the master: its rows appended as the worker rendered them;
        its records decoded only when a `record_kept` listener takes them."""
        if self.run is None:
            return
        self.run.add_rows(batch.rows, batch.counts)
        if self.events.record_kept._handlers:
            fire = self.events.record_kept.fire
            for record in batch.records():
                fire(record=record)

    def _feed_live(self, record: RequestRecord, **_kwargs: Any) -> None:
        if self.live is not None:
            self.live.add(record)

    def _on_test_stop(self, environment: Environment, **_kwargs: Any) -> None:
        self.recorder.drain()
        if self.is_worker:
            # Stats first: the master closes the run when the final batch arrives.
            self.scenarios.ship_stats()
            assert self.outbox is not None
            self.outbox.ship_final(load=self._worker_load())
            return
        self._close_run()

    def _worker_load(self) -> ProcessLoad:
        """A worker's figures, with its clock's offset to the master's."""
        load = self.probe.stop("worker")
        clock = self.clock
        if clock is None or clock.offset_s is None or clock.rtt_s is None:
            return load
        return dataclasses.replace(
            load, clock_offset_ms=clock.offset_s * 1000, clock_rtt_ms=clock.rtt_s * 1000
        )

    def _load_generator(self, own: ProcessLoad) -> dict[str, ProcessLoad]:
        """run.json's `load_generator`: this process's figures, then every worker's."""
        workers = self.collector.loads if self.collector is not None else {}
        return {("master" if self.is_master else "local"): own, **dict(sorted(workers.items()))}

    def _close_run(self) -> None:
        run = self.run
        if run is None:
            return
        own = self.probe.stop("master" if self.is_master else "standalone")
        # The load ends here; a master behind on records may take a while to receive the last.
        load_ended = time.time()
        if self.collector is not None:
            run.update(fleet=self.collector.collect_final_batches())
        if self.server is not None:
            run.update(server=self.server.close())
            self.server = None
        run.update(**self.scenarios.sections(), load_generator=self._load_generator(own))
        self.events.run_closing.fire(environment=self.environment, run=run)
        for timer in self._timers:
            timer.kill(block=False)
        self._timers = []
        status, reason = self._ending or ("finished", "")
        run.finish(status=status, reason=reason, load_ended_unix_s=load_ended)
        self.run = None
        replay = any(s.type == "trace" for s in self.settings.config.scenarios.values())
        self.summary_text = write_summary(run, replay=replay)

    def _on_quitting(self, environment: Environment, **_kwargs: Any) -> None:
        if self.run is not None and self._ending is None:
            why = f"{self._signal} received" if self._signal else "Locust quit"
            self._ending = ("interrupted", f"{why} before the test ended")

    def _on_quit(self, **_kwargs: Any) -> None:
        if self.summary_text:
            print("\n" + self.summary_text, end="", flush=True)

    # -- ending a test early -------------------------------------------------------------

    def abort(self, message: str) -> None:
        """End the whole test for a problem the user must fix: one line, exit code 2,
        run.json `status: aborted` with the message. On a worker, the master is told and
        ends the test for every worker."""
        if self._ending is not None and self._ending[0] == "aborted":
            return
        self._ending = ("aborted", message)
        runner = self.environment.runner
        if self.is_worker:
            runner.send_message(ABORT_MESSAGE, {"message": message})
            return
        print(f"kvswarm: {message}", file=sys.stderr, flush=True)
        self.environment.process_exit_code = 2
        # Not from this greenlet: quitting kills the users, and the caller may be one.
        headless = getattr(self.environment.parsed_options, "headless", False)
        gevent.spawn(runner.quit if headless else runner.stop)

    def _on_worker_abort(self, environment: Environment, msg: Any, **_kwargs: Any) -> None:
        self.abort(msg.data["message"])

    # -- web UI --------------------------------------------------------------------------

    def _add_web_routes(self) -> None:
        app = self.environment.web_ui.app

        @app.route("/kvswarm/live")
        @self.environment.web_ui.auth_required_if_enabled
        def kvswarm_live() -> Any:
            """Live TTFT/TPOT/ITL/E2E percentiles (ms) per scenario, across all workers."""
            from flask import jsonify

            live = self.live or LiveLatency()
            return jsonify(
                {
                    "run": str(self.run.path) if self.run else None,
                    "requests": live.requests,
                    "percentiles_ms": live.percentiles_ms(),
                }
            )

    # -- outside the locust command ------------------------------------------------------

    @classmethod
    def recording(
        cls, environment: Environment, results_dir: Path, config: Config | None = None
    ) -> KvswarmPlugin:
        """A plugin with an open run for an environment that Locust's `init` never saw
        (benchmarks and tests that drive kvswarm's reporting without the locust command)."""
        settings = RunSettings(
            options=KvOptions(),
            config=config or Config(),
            mode="non_disaggregated",
            endpoint="chat",
            api_key=None,
            results_dir=results_dir,
            base_url="http://127.0.0.1:1/v1",
        )
        plugin = cls(environment, settings)
        plugin.run = RunDirectory.create(results_dir, mode=settings.mode)
        return plugin


def select_by_tags(environment: Environment) -> None:
    """Leave out the scenario classes that `--tags` / `--exclude-tags` leave no task in.

    Locust filters tasks by tag but keeps spawning users of classes left without tasks
    (each logging "No tasks defined" in a tight loop). A tag that matches no scenario is
    a one-line error listing the scenario tags."""
    options = environment.parsed_options
    tags = set(getattr(options, "tags", None) or ())
    excluded = set(getattr(options, "exclude_tags", None) or ())
    if not tags and not excluded:
        return
    scenarios = scenario_users.scenario_classes(environment.user_classes)
    keep = [
        cls
        for cls in scenarios
        if (not tags or cls.scenario in tags) and cls.scenario not in excluded
    ]
    if scenarios and not keep:
        known = ", ".join(cls.scenario for cls in scenarios)
        given = ", ".join(sorted(tags)) or "(none)"
        raise KvswarmError(
            f"--tags {given} --exclude-tags {', '.join(sorted(excluded)) or '(none)'} "
            f"leave no scenario to run; the scenario tags are: {known}"
        )
    unknown = sorted(tags - {cls.scenario for cls in scenarios})
    if unknown and len(scenarios) == len(environment.user_classes):
        known = ", ".join(cls.scenario for cls in scenarios)
        raise KvswarmError(
            f"--tags: no scenario is tagged {', '.join(unknown)}; the scenario tags are: {known}"
        )
    others = [cls for cls in environment.user_classes if cls not in scenarios]
    environment.user_classes[:] = others + keep


def write_summary(run_dir: RunDirectory, *, replay: bool = False) -> str:
    """Compute the exact summary from the run's files and write summary.txt; with
    `replay`, first run.json's `replay` section (the run's files are read once for both)."""
    # The analysis package imports pandas: loaded here, at the end of a run, not on every
    # worker's start.
    from kvswarm.analysis.runs import load_run
    from kvswarm.analysis.summary import format_summary, summarize

    run = load_run(run_dir.path)
    if replay:
        run = _with_replay(run_dir, run)
    text = format_summary(summarize(run), str(run_dir.path), run)
    (run_dir.path / SUMMARY_TXT).write_text(text, encoding="utf-8")
    return text


def _with_replay(run_dir: RunDirectory, run: Run) -> Run:
    """run.json's `replay`: each trace scenario's replay held against its trace; the run
    with it."""
    from kvswarm.analysis.replay import replay_sections

    try:
        sections = replay_sections(run)
    except KvswarmError as exc:
        print(f"kvswarm: the replay was not checked against its trace: {exc}", file=sys.stderr)
        return run
    if not sections:
        return run
    run_dir.update(replay=sections)
    return dataclasses.replace(run, record=run_dir.record)


def _warmup(config: Config) -> float:
    return config.results.warmup_s


def _flush_periodically(run: RunDirectory, interval_s: float) -> None:
    # Appends flush on their own; this covers quiet spells (a stalled server).
    while True:
        gevent.sleep(interval_s)
        run.writer.flush()


def _bind(environment: Environment, **_kwargs: Any) -> None:
    """Locust's `init`: one plugin per environment; a problem the user must fix ends the
    process with one line and exit code 2 before any load is sent."""
    keep_freed_memory()
    try:
        plugin = KvswarmPlugin(environment)
        plugin.attach()
    except KvswarmError as exc:
        exit_with(str(exc))
    plugin.watch_signals()


apply_workarounds()
locust.events.init_command_line_parser.add_listener(add_arguments)
locust.events.init.add_listener(_bind)
