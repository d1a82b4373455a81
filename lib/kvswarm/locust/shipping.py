"""Shipping request records from Locust workers to the master, on Locust's own channel.

Workers pack finished records into batches (`RecordBatch`: the requests.csv rows rendered
on the worker, the records packed by position) and ship a batch as a `kvswarm_records`
message when it holds `BATCH_RECORDS` records, and at every stats report
(`report_to_master`, every few seconds). When a worker's test stops the plugin ships the
rest with `final: true` (`ship_final`), with the worker's own load figures (`ProcessLoad`:
its event-loop lag and CPU use). The master appends every batch to the run's one
requests.csv, and acknowledges it (`kvswarm_records_ack`).

Back-pressure: a worker has at most `MAX_UNACKED` batches on their way at once. When the
master falls behind, further batches wait on the worker (in its memory) instead of in
ZeroMQ's queues, so the master's event loop only ever has a few batches to get through
(heartbeats, timers and the stop of a run are not held up behind a backlog), and it
yields to them after every batch. Each worker says in its final batch how far the master
fell behind (run.json `fleet.workers`: `held_max_records`, `behind_s`). Every stats report
also carries the worker's live load (`LiveLoad`: its requests in flight and its CPU share
since its previous report), which the master's exporter serves as gauges (Locust's own
heartbeat CPU figure is read only every 10 s).

Locust's headless `--run-time` ends a distributed run by firing the master's `test_stop`
before the workers have stopped. So the master, in its `test_stop`, asks every worker
that has not yet sent its final batch to stop (`kvswarm_stop`) and waits for those
batches before it closes the run, for as long as batches keep coming (a backlog drains
at the master's pace; `FINAL_BATCH_TIMEOUT_S` with none arriving ends the wait); a worker
that dies meanwhile (heartbeats missing) is not waited for, and run.json names it as lost.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from kvswarm.locust.batches import RecordBatch
from kvswarm.records import RequestRecord
from kvswarm.runrecord import FleetSection, ProcessLoad, WorkerShipment
from kvswarm.sinks.exporter import ProcessCpu

RECORDS_MESSAGE = "kvswarm_records"
ACK_MESSAGE = "kvswarm_records_ack"
STOP_MESSAGE = "kvswarm_stop"
LOAD_KEY = "kvswarm_live_load"
# Records a worker packs into one batch before it ships it without waiting for its next
# report (about 1.2 MB for 64-token records).
BATCH_RECORDS = 1000
# Batches a worker has sent that the master has not yet acknowledged; more wait on the worker.
MAX_UNACKED = 2
# When a test stops, how long the master waits for the workers' final batches with no
# batch arriving.
FINAL_BATCH_TIMEOUT_S = 30.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveLoad:
    """A worker's load as its latest stats report gives it: requests in flight per
    scenario, and its CPU share since its previous report (1.0 = one core busy)."""

    in_flight: Mapping[str, int] = field(default_factory=dict)
    cpu_share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"in_flight": dict(self.in_flight), "cpu_share": self.cpu_share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveLoad:
        in_flight = {str(k): int(v) for k, v in (data.get("in_flight") or {}).items()}
        return cls(in_flight=in_flight, cpu_share=float(data.get("cpu_share", 0.0)))


class WorkerOutbox:
    """A worker's finished records, waiting to be shipped to the master; `in_flight` is
    the worker's requests in flight per scenario, shipped with every stats report.

    `filling` is the batch records are added to; `queue` holds the batches sealed and not
    yet sent (not empty only while the master is behind: `MAX_UNACKED` sent, not
    acknowledged)."""

    def __init__(self, environment: Environment, in_flight: Mapping[str, int]) -> None:
        self.environment = environment
        self.in_flight = in_flight
        self.filling = RecordBatch()
        self.queue: deque[tuple[int, dict[str, Any]]] = deque()
        self.unacked = 0
        self.queued_records = 0
        self.held_max_records = 0
        self.behind_s = 0.0
        self._behind_since: float | None = None
        runner = environment.runner
        assert isinstance(runner, WorkerRunner)
        self._cpu = ProcessCpu(runner.client_id)
        runner.register_message(STOP_MESSAGE, self._on_stop_request)
        runner.register_message(ACK_MESSAGE, self._on_ack)
        environment.events.report_to_master.add_listener(self._on_report)

    def add(self, record: RequestRecord) -> None:
        self.filling.add(record)
        if self.filling.count >= BATCH_RECORDS:
            self._seal()
            self._ship()

    def _seal(self, *, final: bool = False, load: ProcessLoad | None = None) -> None:
        message = self.filling.to_message()
        message["final"] = final
        if load is not None:
            message["load"] = load.to_dict()
        self.queue.append((self.filling.count, message))
        self.queued_records += self.filling.count
        self.filling = RecordBatch()

    def _ship(self) -> None:
        """Send sealed batches while fewer than `MAX_UNACKED` are unacknowledged."""
        while self.queue and self.unacked < MAX_UNACKED:
            count, message = self.queue.popleft()
            self.queued_records -= count
            if message["final"]:
                self._note_behind()
                message["behind"] = {
                    "held_max_records": self.held_max_records,
                    "behind_s": round(self.behind_s, 3),
                }
                self.held_max_records, self.behind_s = 0, 0.0
            self.unacked += 1
            self.environment.runner.send_message(RECORDS_MESSAGE, message)
        self._note_behind()

    def _note_behind(self) -> None:
        """Keep account of the time records wait here for the master."""
        now = time.monotonic()
        if self._behind_since is not None:
            self.behind_s += now - self._behind_since
            self._behind_since = None
        if self.queue:
            if self.held_max_records == 0:
                logger.warning(
                    "kvswarm: the master is behind: records wait on this worker until it "
                    "acknowledges the batches it has"
                )
            self._behind_since = now
            self.held_max_records = max(self.held_max_records, self.queued_records)

    def _on_ack(self, environment: Environment, msg: Any, **_kwargs: Any) -> None:
        self.unacked = max(0, self.unacked - 1)
        self._ship()

    def _on_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        if self.filling.count:
            self._seal()
            self._ship()
        (cpu_share,) = self._cpu().values()
        data[LOAD_KEY] = LiveLoad(dict(self.in_flight), cpu_share).to_dict()

    def ship_final(self, load: ProcessLoad | None = None) -> None:
        """Ship everything left, the last batch marked as this worker's last of the test,
        with this worker's load figures (batches still waiting for the master go first)."""
        self._seal(final=True, load=load)
        self._ship()

    def _on_stop_request(self, environment: Environment, msg: Any, **_kwargs: Any) -> None:
        # Stopping fires test_stop, where the plugin ships the final batch (with any
        # request the stop cancelled); a worker already stopped has already shipped it.
        environment.runner.stop()


@dataclass
class WorkerTally:
    records: int = 0
    final: bool = False
    held_max_records: int = 0
    behind_s: float = 0.0
    final_t: float = 0.0  # when its final batch arrived (monotonic)


@dataclass
class MasterCollector:
    """The master's side: hands every batch to `keep` while a run is open (`is_open`),
    acknowledges it to its worker, and tallies per worker."""

    environment: Environment
    keep: Callable[[RecordBatch], None]
    is_open: Callable[[], bool]
    workers: dict[str, WorkerTally] = field(default_factory=dict)
    # Per worker: its load figures, from its final batch.
    loads: dict[str, ProcessLoad] = field(default_factory=dict)
    late_records: int = 0
    # When a batch last arrived (monotonic): the wait for final batches goes on while they come.
    last_batch_t: float = 0.0
    # Per worker: its live load, from its latest stats report.
    live: dict[str, LiveLoad] = field(default_factory=dict)

    def install(self) -> None:
        runner = self.environment.runner
        assert isinstance(runner, MasterRunner)
        runner.register_message(RECORDS_MESSAGE, self._on_records)
        self.environment.events.worker_report.add_listener(self._on_worker_report)

    def start(self) -> None:
        self.workers = {}
        self.loads = {}
        self.late_records = 0

    def _accept(self, worker_id: str, batch: RecordBatch, final: bool) -> None:
        self.last_batch_t = time.monotonic()
        tally = self.workers.setdefault(worker_id, WorkerTally())
        tally.records += batch.count
        if final and not tally.final:
            tally.final, tally.final_t = True, self.last_batch_t
        if not self.is_open():
            self.late_records += batch.count
            if batch.count:
                logger.warning(
                    "kvswarm: %d records from %s arrived after the run closed",
                    batch.count,
                    worker_id,
                )
            return
        self.keep(batch)

    def _on_records(self, environment: Environment, msg: Any, **_kwargs: Any) -> None:
        data = msg.data or {}
        try:
            if data.get("load"):
                self.loads[msg.node_id] = ProcessLoad.from_dict(data["load"])
            if data.get("behind"):
                self._note_behind(msg.node_id, data["behind"])
            self._accept(msg.node_id, RecordBatch.from_message(data), bool(data.get("final")))
        finally:
            environment.runner.send_message(ACK_MESSAGE, None, client_id=msg.node_id)
        # Heartbeats, timers (the run-time limit) and the web UI run between batches,
        # however many are queued: sleep(0) would not let the loop poll or fire timers.
        gevent.idle()

    def _note_behind(self, worker_id: str, behind: Mapping[str, Any]) -> None:
        tally = self.workers.setdefault(worker_id, WorkerTally())
        tally.held_max_records = int(behind.get("held_max_records", 0))
        tally.behind_s = float(behind.get("behind_s", 0.0))
        if tally.held_max_records:
            logger.warning(
                "kvswarm: the master fell behind %s's records (up to %d waited on the worker, "
                "%.1f s in all); run.json fleet.workers says so",
                worker_id,
                tally.held_max_records,
                tally.behind_s,
            )

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        if LOAD_KEY in data:
            self.live[client_id] = LiveLoad.from_dict(data[LOAD_KEY])

    def live_loads(self) -> dict[str, LiveLoad]:
        """Each connected worker's live load, from its latest stats report."""
        runner = self.environment.runner
        connected = {node.id for node in runner.clients.all if node.state != STATE_MISSING}
        return {worker: load for worker, load in sorted(self.live.items()) if worker in connected}

    def _live_workers_without_final(self) -> set[str]:
        runner = self.environment.runner
        live = {node.id for node in runner.clients.all if node.state != STATE_MISSING}
        return {worker for worker in live if not self.workers.get(worker, WorkerTally()).final}

    def collect_final_batches(self, timeout_s: float = FINAL_BATCH_TIMEOUT_S) -> FleetSection:
        """Ask running workers to stop and wait for their final batches, for as long as
        batches keep arriving (`timeout_s` with none ends the wait).

        Returns run.json's `fleet` section: records shipped per worker, how far the master
        fell behind them and when their final batch came, and which workers were lost (no
        final batch: killed, or their heartbeats stopped).
        """
        pending = self._live_workers_without_final()
        for worker in pending:
            self.environment.runner.send_message(STOP_MESSAGE, None, client_id=worker)
        started = time.monotonic()
        while pending and time.monotonic() - max(started, self.last_batch_t) < timeout_s:
            gevent.sleep(0.05)
            pending = self._live_workers_without_final()
        lost = sorted(worker for worker, tally in self.workers.items() if not tally.final)
        lost += sorted(
            node.id
            for node in self.environment.runner.clients.all
            if node.id not in self.workers and node.state == STATE_MISSING
        )
        return FleetSection(
            distributed=True,
            workers={
                worker: WorkerShipment(
                    records=tally.records,
                    final_batch=tally.final,
                    held_max_records=tally.held_max_records,
                    behind_s=tally.behind_s,
                    final_after_s=round(max(0.0, tally.final_t - started), 3)
                    if tally.final
                    else 0.0,
                )
                for worker, tally in sorted(self.workers.items())
            },
            lost_workers=tuple(lost),
            late_records=self.late_records,
        )
