"""One run on disk: `results/<run-id>/` with run.json, requests.csv and summary.txt."""

from __future__ import annotations

import contextlib
import platform
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kvswarm import __version__
from kvswarm.errors import KvswarmError
from kvswarm.records import RecordWriter, RequestRecord
from kvswarm.runrecord import RecordCounts, RunRecord, Window, write_run_record


def new_run_id(mode: str, now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now or time.time(), tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{mode}"


def _versions() -> dict[str, str]:
    versions = {"kvswarm": __version__, "python": platform.python_version()}
    for package in ("locust", "gevent", "orjson", "httptools", "sseclient-py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret options (`--*key*`) replaced."""
    redacted: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            redacted.append("<redacted>")
            hide_next = False
        elif arg.startswith("--") and "key" in arg.lower():
            name, sep, _value = arg.partition("=")
            redacted.append(f"{name}=<redacted>" if sep else name)
            hide_next = not sep
        else:
            redacted.append(arg)
    return redacted


@dataclass
class RunDirectory:
    """Creates the run's directory and keeps run.json and requests.csv up to date.

    `record` is what run.json holds; producers add their sections with `update(...)`,
    which rewrites run.json. Records are appended as they arrive (see `RecordWriter`).
    """

    path: Path
    record: RunRecord
    writer: RecordWriter
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        results_dir: str | Path,
        *,
        mode: str,
        run_id: str | None = None,
        flush_interval_s: float = 2.0,
        **sections: Any,
    ) -> RunDirectory:
        """A new run directory under `results_dir`.

        An explicit `run_id` that already exists is refused (`KvswarmError`): appending
        a second run's rows to the first run's requests.csv would mix two runs."""
        root = Path(results_dir)
        path = root / (run_id or new_run_id(mode))
        if run_id is not None and path.exists():
            raise KvswarmError(
                f"{path}: a run with this id already exists; choose another --kv-run-id "
                f"or remove the directory"
            )
        suffix = 1
        base = path
        while path.exists():
            suffix += 1
            path = root / f"{base.name}-{suffix}"
        path.mkdir(parents=True)
        started = time.time()
        record = RunRecord(
            run_id=path.name,
            mode=mode,
            window=Window(start_unix_s=started),
            started_at=datetime.fromtimestamp(started, tz=UTC).isoformat(),
            load_host=socket.gethostname(),
            platform=platform.platform(),
            argv=tuple(redact_argv(sys.argv)),
            versions=_versions(),
            **sections,
        )
        writer = RecordWriter(path / "requests.csv", flush_interval_s=flush_interval_s)
        run = cls(path=path, record=record, writer=writer)
        run.write_meta()
        return run

    def add(self, record: RequestRecord) -> None:
        self.writer.append(record)
        key = "cancelled" if record.cancelled else ("ok" if record.ok else "failed")
        self.counts[key] = self.counts.get(key, 0) + 1

    def add_rows(self, text: str, counts: Mapping[str, int]) -> None:
        """Records already rendered as requests.csv rows (a worker's `RowText`), with how
        many are ok, failed and cancelled."""
        self.writer.append_rows(text, sum(counts.values()))
        for key, count in counts.items():
            self.counts[key] = self.counts.get(key, 0) + count

    def update(self, **changes: Any) -> None:
        """Replace some sections of run.json and rewrite it."""
        self.record = replace(self.record, **changes)
        self.write_meta()

    def write_meta(self) -> None:
        write_run_record(self.path, self.record)

    def finish(
        self, *, status: str = "finished", reason: str = "", load_ended_unix_s: float | None = None
    ) -> None:
        """Flush every record, close the window and say how the run ended.

        The window ends at `load_ended_unix_s` when given (a master: when the test
        stopped, before it waited for the workers' last records), else now."""
        self.writer.close()
        ended = time.time()
        self.update(
            status=status,
            status_reason=reason,
            window=replace(self.record.window, end_unix_s=load_ended_unix_s or ended),
            ended_at=datetime.fromtimestamp(ended, tz=UTC).isoformat(),
            records=RecordCounts(total=self.writer.count, **self.counts),
        )
