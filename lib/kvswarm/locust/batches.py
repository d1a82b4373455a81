"""`RecordBatch`: request records in the form a Locust worker ships them to the master.

One master takes every worker's records, so its cost per record is what caps a fleet
(bench/README.md, "The master's ceiling"). A batch therefore carries what the master needs
in the form it needs it, and the work of getting it there is done on the workers, which
scale out:

- `rows`: the records' requests.csv rows, rendered on the worker (`RowText`, the same
  `COLUMNS` as everywhere); the master appends the text as it is;
- `counts`: how many records are ok, failed and cancelled (run.json's counts);
- `packed`: each record as a list of its fields in `RequestRecord` order, its ITL gaps as
  one bytes value of 8-byte floats. The master turns them back into `RequestRecord`s
  (`records()`) only when something listens for records there (the exporter, the live
  view), a few µs each; otherwise it never decodes them field by field.

A batch names the record fields and CSV columns it was made with: a master whose own
differ (a worker of another kvswarm version) rebuilds the records by field name and
renders their rows itself, slower but the same rows.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from kvswarm.records import CSV_COLUMNS, RequestRecord, RowText, record_from_dict

__all__ = ["FIELD_NAMES", "RecordBatch", "pack", "unpack"]

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_ITL = FIELD_NAMES.index("itl_s")
_values = attrgetter(*FIELD_NAMES)


def pack(record: RequestRecord) -> list[Any]:
    """A record as plain msgpack data: its fields in order, the ITL gaps as bytes."""
    values = list(_values(record))
    values[_ITL] = array("d", record.itl_s).tobytes()
    return values


def unpack(values: list[Any]) -> RequestRecord:
    """Inverse of `pack` (same kvswarm version; `values` is left as it is)."""
    gaps = tuple(array("d", values[_ITL]))
    return RequestRecord(*values[:_ITL], gaps, *values[_ITL + 1 :])


def _status(record: RequestRecord) -> str:
    return "cancelled" if record.cancelled else ("ok" if record.ok else "failed")


@dataclass
class RecordBatch:
    """Records on their way from a worker to the master (see the module's docstring).

    A worker `add`s records and ships `to_message()`; the master reads one with
    `from_message` and keeps `rows`, `counts` and, when it needs them, `records()`.
    """

    rows: str = ""
    count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    packed: list[list[Any]] = field(default_factory=list)
    fields: tuple[str, ...] = FIELD_NAMES
    columns: tuple[str, ...] = CSV_COLUMNS
    _text: RowText | None = field(default=None, repr=False, compare=False)

    def add(self, record: RequestRecord) -> None:
        if self._text is None:
            self._text = RowText()
        self._text.add(record)
        self.packed.append(pack(record))
        self.count += 1
        status = _status(record)
        self.counts[status] = self.counts.get(status, 0) + 1

    def to_message(self) -> dict[str, Any]:
        """The batch as plain data for Locust's message channel (msgpack)."""
        rows = self.rows + (self._text.take() if self._text is not None else "")
        return {
            "fields": list(self.fields),
            "columns": list(self.columns),
            "rows": rows,
            "counts": self.counts,
            "packed": self.packed,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> RecordBatch:
        packed = data.get("packed") or []
        batch = cls(
            rows=data.get("rows") or "",
            count=len(packed),
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            packed=packed,
            fields=tuple(data.get("fields") or ()),
            columns=tuple(data.get("columns") or ()),
        )
        if batch.fields != FIELD_NAMES:
            batch._repack_by_name()
        elif batch.columns != CSV_COLUMNS:
            batch._render_rows()
        return batch

    def records(self) -> Iterator[RequestRecord]:
        """The batch's records, decoded one at a time (each once: they are not kept)."""
        for values in self.packed:
            yield unpack(values)

    def _repack_by_name(self) -> None:
        """Records from a sender with other fields: by name, unknown fields ignored."""
        itl = self.fields.index("itl_s") if "itl_s" in self.fields else -1
        records = []
        for values in self.packed:
            data = dict(zip(self.fields, values, strict=False))
            if itl >= 0:
                data["itl_s"] = array("d", values[itl]).tolist()
            records.append(record_from_dict(data))
        self.packed = [pack(record) for record in records]
        self.fields = FIELD_NAMES
        self.counts = {}
        for record in records:
            status = _status(record)
            self.counts[status] = self.counts.get(status, 0) + 1
        self._render_rows(records)

    def _render_rows(self, records: list[RequestRecord] | None = None) -> None:
        """Rows in this master's columns, from the records."""
        text = RowText()
        for record in records if records is not None else self.records():
            text.add(record)
        self.rows = text.take()
        self.columns = CSV_COLUMNS
