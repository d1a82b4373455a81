"""Shipping request records from Locust workers to the master, on Locust's own channel.

Workers keep finished records in a bounded outbox and ship it with every stats report
(`report_to_master`, every few seconds), or at once as a `kvswarm_records` message when it
fills. When a worker's test stops the plugin ships the rest with `final: true`
(`ship_final`), with the worker's own load figures (`ProcessLoad`: its event-loop lag and
CPU use). The master appends every batch to the run's one requests.csv. Every stats report
also carries the worker's live load (`LiveLoad`: its requests in flight and its CPU share
since its previous report), which the master's exporter serves as gauges (Locust's own
heartbeat CPU figure is read only every 10 s).

Locust's headless `--run-time` ends a distributed run by firing the master's `test_stop`
before the workers have stopped. So the master, in its `test_stop`, asks every worker
that has not yet sent its final batch to stop (`kvswarm_stop`) and waits for those
batches before it closes the run; a worker that dies meanwhile (heartbeats missing) is
not waited for, and run.json names it as lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from kvswarm.records import RequestRecord, record_from_dict, record_to_dict
from kvswarm.runrecord import FleetSection, ProcessLoad, WorkerShipment
from kvswarm.sinks.exporter import ProcessCpu

RECORDS_MESSAGE = "kvswarm_records"
STOP_MESSAGE = "kvswarm_stop"
REPORT_KEY = "kvswarm_records"
LOAD_KEY = "kvswarm_live_load"
# Records a worker holds before it ships them without waiting for its next report.
OUTBOX_LIMIT = 1000
# How long the master waits for the workers' final batches when a test stops.
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
    the worker's requests in flight per scenario, shipped with every stats report."""

    def __init__(self, environment: Environment, in_flight: Mapping[str, int]) -> None:
        self.environment = environment
        self.in_flight = in_flight
        self.records: list[dict[str, Any]] = []
        runner = environment.runner
        assert isinstance(runner, WorkerRunner)
        self._cpu = ProcessCpu(runner.client_id)
        runner.register_message(STOP_MESSAGE, self._on_stop_request)
        environment.events.report_to_master.add_listener(self._on_report)

    def add(self, record: RequestRecord) -> None:
        self.records.append(record_to_dict(record))
        if len(self.records) >= OUTBOX_LIMIT:
            self._send(final=False)

    def _take(self) -> list[dict[str, Any]]:
        batch, self.records = self.records, []
        return batch

    def _send(self, *, final: bool, load: ProcessLoad | None = None) -> None:
        message: dict[str, Any] = {"records": self._take(), "final": final}
        if load is not None:
            message["load"] = load.to_dict()
        self.environment.runner.send_message(RECORDS_MESSAGE, message)

    def _on_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        if self.records:
            data[REPORT_KEY] = self._take()
        (cpu_share,) = self._cpu().values()
        data[LOAD_KEY] = LiveLoad(dict(self.in_flight), cpu_share).to_dict()

    def ship_final(self, load: ProcessLoad | None = None) -> None:
        """Ship everything left, marked as this worker's last batch of the test, with this
        worker's load figures."""
        self._send(final=True, load=load)

    def _on_stop_request(self, environment: Environment, msg: Any, **_kwargs: Any) -> None:
        # Stopping fires test_stop, where the plugin ships the final batch (with any
        # request the stop cancelled); a worker already stopped has already shipped it.
        environment.runner.stop()


@dataclass
class WorkerTally:
    records: int = 0
    final: bool = False


@dataclass
class MasterCollector:
    """The master's side: hands every batch to `keep` while a run is open (`is_open`),
    and tallies per worker."""

    environment: Environment
    keep: Callable[[RequestRecord], None]
    is_open: Callable[[], bool]
    workers: dict[str, WorkerTally] = field(default_factory=dict)
    # Per worker: its load figures, from its final batch.
    loads: dict[str, ProcessLoad] = field(default_factory=dict)
    late_records: int = 0
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

    def _accept(self, worker_id: str, records: list[dict[str, Any]], final: bool) -> None:
        tally = self.workers.setdefault(worker_id, WorkerTally())
        tally.records += len(records)
        tally.final = tally.final or final
        if not self.is_open():
            self.late_records += len(records)
            if records:
                logger.warning(
                    "kvswarm: %d records from %s arrived after the run closed",
                    len(records),
                    worker_id,
                )
            return
        for data in records:
            self.keep(record_from_dict(data))

    def _on_records(self, environment: Environment, msg: Any, **_kwargs: Any) -> None:
        data = msg.data or {}
        if data.get("load"):
            self.loads[msg.node_id] = ProcessLoad.from_dict(data["load"])
        self._accept(msg.node_id, data.get("records", []), bool(data.get("final")))

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        if LOAD_KEY in data:
            self.live[client_id] = LiveLoad.from_dict(data[LOAD_KEY])
        records = data.get(REPORT_KEY)
        if records:
            self._accept(client_id, records, False)

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
        """Ask running workers to stop and wait for their final batches.

        Returns run.json's `fleet` section: records shipped per worker, and which workers
        were lost (no final batch: killed, or their heartbeats stopped).
        """
        pending = self._live_workers_without_final()
        for worker in pending:
            self.environment.runner.send_message(STOP_MESSAGE, None, client_id=worker)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
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
                worker: WorkerShipment(records=tally.records, final_batch=tally.final)
                for worker, tally in sorted(self.workers.items())
            },
            lost_workers=tuple(lost),
            late_records=self.late_records,
        )
