"""Records shipped from workers to the master as `RecordBatch`es, with a window of
unacknowledged batches: nothing lost, nothing twice, requests.csv as a standalone run
writes it."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from locust.env import Environment
from locust.rpc.protocol import Message
from locust.runners import WorkerRunner

from kvswarm.locust import shipping
from kvswarm.locust.batches import FIELD_NAMES, RecordBatch, pack
from kvswarm.locust.shipping import (
    ACK_MESSAGE,
    MAX_UNACKED,
    RECORDS_MESSAGE,
    MasterCollector,
    WorkerOutbox,
)
from kvswarm.records import CANCELLED, RecordWriter, RequestRecord
from kvswarm.rundir import RunDirectory
from kvswarm.runrecord import ProcessLoad


def make_record(n: int, **changes: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": f"w1-1-{n}",
        "worker_id": "w1",
        "user_id": 1,
        "scenario": "synthetic",
        "mode": "non_disaggregated",
        "endpoint": "chat",
        "streamed": True,
        "start_unix_s": 1_700_000_000.123456 + n,
        "prefix_id": "doc-3",
        "prefix_tokens": 512,
        "expected_hit": True,
        "prompt_tokens": 600,
        "cached_tokens": 512,
        "created_cache_tokens": 88,
        "output_tokens": 64,
        "output_tokens_source": "usage",
        "text_chunks": 64,
        "ttft_s": 0.05,
        "tpot_s": 0.01,
        "e2e_s": 0.68,
        "itl_s": tuple(0.01 + 0.000123 * i for i in range(63)),
        "status_code": 200,
        "finish_reason": "length",
        "ok": True,
        "server_queue_s": 0.001,
    }
    fields.update(changes)
    return RequestRecord(**fields)


def over_the_wire(data: dict[str, Any]) -> dict[str, Any]:
    """What the master's handler receives: through Locust's own msgpack serialization."""
    return Message.unserialize(Message(RECORDS_MESSAGE, data, "w1").serialize()).data


MIXED = [
    make_record(1),
    make_record(2, ok=False, failure="http_503", error='HTTP 503: "overloaded", retry', itl_s=()),
    make_record(3, ok=False, failure=CANCELLED, ttft_s=None, tpot_s=None, itl_s=()),
    make_record(4, prompt_tokens=None, cached_tokens=None, created_cache_tokens=None),
]


def test_a_record_round_trips_through_a_shipped_batch_unchanged() -> None:
    batch = RecordBatch()
    for record in MIXED:
        batch.add(record)
    received = RecordBatch.from_message(over_the_wire(batch.to_message()))
    assert list(received.records()) == MIXED
    # Decoding does not consume the batch: a second listener pass sees the same records.
    assert list(received.records()) == MIXED
    assert received.counts == {"ok": 2, "failed": 1, "cancelled": 1}


def test_a_batch_carries_the_rows_a_standalone_run_writes(tmp_path: Path) -> None:
    standalone = RecordWriter(tmp_path / "standalone.csv")
    for record in MIXED:
        standalone.append(record)
    standalone.close()
    batch = RecordBatch()
    for record in MIXED:
        batch.add(record)
    shipped = RecordWriter(tmp_path / "shipped.csv")
    received = RecordBatch.from_message(over_the_wire(batch.to_message()))
    shipped.append_rows(received.rows, received.count)
    shipped.close()
    assert (tmp_path / "shipped.csv").read_bytes() == (tmp_path / "standalone.csv").read_bytes()
    assert shipped.count == standalone.count == len(MIXED)


def test_a_batch_from_a_sender_with_other_fields_is_read_by_name() -> None:
    data = over_the_wire(RecordBatch.from_message({}).to_message())
    # A sender whose record has one field more (at the front) and columns of its own.
    data["fields"] = ["from_the_future", *FIELD_NAMES]
    data["columns"] = ["request_id"]
    data["packed"] = [["x", *pack(record)] for record in MIXED]
    data["rows"] = "not,our,columns\n"
    received = RecordBatch.from_message(over_the_wire(data))
    assert list(received.records()) == MIXED
    expected = RecordBatch()
    for record in MIXED:
        expected.add(record)
    assert received.rows == expected.to_message()["rows"]
    assert received.counts == {"ok": 2, "failed": 1, "cancelled": 1}


class FakeWorkerRunner(WorkerRunner):
    """Locust's worker runner with its channel replaced by a list of sent messages."""

    def __init__(self) -> None:  # no connection to a master
        self.client_id = "w1"
        self.custom_messages = {}
        self.greenlet = None
        self.sent: list[tuple[str, Any]] = []

    def send_message(self, msg_type: str, data: Any = None, client_id: Any = None) -> None:
        self.sent.append((msg_type, data))


def worker_outbox() -> tuple[WorkerOutbox, FakeWorkerRunner]:
    environment = Environment()
    runner = FakeWorkerRunner()
    environment.runner = runner
    return WorkerOutbox(environment, {}), runner


def ack(outbox: WorkerOutbox) -> None:
    outbox._on_ack(outbox.environment, SimpleNamespace(data=None, node_id="master"))


def test_a_worker_holds_batches_while_the_master_has_not_acknowledged_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shipping, "BATCH_RECORDS", 2)
    outbox, runner = worker_outbox()
    records = [make_record(n) for n in range(11)]
    for record in records:
        outbox.add(record)
    # Five full batches: two on their way, three waiting on the worker.
    assert len(runner.sent) == MAX_UNACKED
    assert outbox.queued_records == 6
    outbox.ship_final(load=ProcessLoad(role="worker"))
    assert len(runner.sent) == MAX_UNACKED
    for _ in range(4):
        ack(outbox)
    messages = [data for kind, data in runner.sent if kind == RECORDS_MESSAGE]
    assert [m["final"] for m in messages] == [False] * 5 + [True]
    shipped = [r for m in messages for r in RecordBatch.from_message(over_the_wire(m)).records()]
    assert shipped == records
    assert messages[-1]["behind"]["held_max_records"] == 7
    assert messages[-1]["load"]["role"] == "worker"


def test_a_worker_ships_at_its_stats_report_when_the_master_keeps_up() -> None:
    outbox, runner = worker_outbox()
    outbox.add(make_record(1))
    assert runner.sent == []
    outbox._on_report("w1", {})
    ack(outbox)
    outbox.ship_final()
    messages = [data for kind, data in runner.sent if kind == RECORDS_MESSAGE]
    assert [len(m["packed"]) for m in messages] == [1, 0]
    assert messages[-1]["behind"]["held_max_records"] == 0


class FakeMasterRunner:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any]] = []
        self.clients = SimpleNamespace(all=[])

    def send_message(self, msg_type: str, data: Any = None, client_id: Any = None) -> None:
        self.sent.append((msg_type, data, client_id))


def test_the_master_keeps_each_batch_once_and_acknowledges_it(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, mode="non_disaggregated")
    runner = FakeMasterRunner()
    environment = SimpleNamespace(runner=runner)
    kept: list[RecordBatch] = []

    def keep(batch: RecordBatch) -> None:
        kept.append(batch)
        run.add_rows(batch.rows, batch.counts)

    collector = MasterCollector(environment, keep, lambda: True)  # type: ignore[arg-type]
    batch = RecordBatch()
    for record in MIXED:
        batch.add(record)
    message = {**batch.to_message(), "final": True, "behind": {"held_max_records": 5}}
    collector._on_records(environment, SimpleNamespace(data=over_the_wire(message), node_id="w1"))
    assert runner.sent == [(ACK_MESSAGE, None, "w1")]
    run.finish()
    with open(run.path / "requests.csv", newline="") as handle:
        ids = [row["request_id"] for row in csv.DictReader(handle)]
    assert ids == [record.request_id for record in MIXED]
    fleet = collector.collect_final_batches(timeout_s=0.1)
    assert fleet.workers["w1"].records == len(MIXED)
    assert fleet.workers["w1"].final_batch
    assert fleet.workers["w1"].held_max_records == 5
    assert run.record.records.total == len(MIXED)
    assert run.record.records.cancelled == 1
