"""One run on disk: `results/<run-id>/` with run.json, requests.csv and summary.txt."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kvswarm import __version__
from kvswarm.records import RecordWriter, RequestRecord


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

    `meta` is what run.json holds; callers add sections (`meta["tokens"] = ...`) and call
    `write_meta()`. Records are appended as they arrive (see `RecordWriter`).
    """

    path: Path
    meta: dict[str, Any]
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
        meta: dict[str, Any] | None = None,
    ) -> RunDirectory:
        root = Path(results_dir)
        base = run_id or new_run_id(mode)
        path = root / base
        suffix = 1
        while path.exists() and run_id is None:
            suffix += 1
            path = root / f"{base}-{suffix}"
        path.mkdir(parents=True, exist_ok=True)
        started = time.time()
        full_meta = {
            "run_id": path.name,
            "status": "running",
            "mode": mode,
            "load_host": socket.gethostname(),
            "platform": platform.platform(),
            "argv": redact_argv(sys.argv),
            "versions": _versions(),
            "window": {"start_unix_s": started, "end_unix_s": None},
            "started_at": datetime.fromtimestamp(started, tz=UTC).isoformat(),
        }
        full_meta.update(meta or {})
        writer = RecordWriter(path / "requests.csv", flush_interval_s=flush_interval_s)
        run = cls(path=path, meta=full_meta, writer=writer)
        run.write_meta()
        return run

    def add(self, record: RequestRecord) -> None:
        self.writer.append(record)
        key = "cancelled" if record.cancelled else ("ok" if record.ok else "failed")
        self.counts[key] = self.counts.get(key, 0) + 1

    def write_meta(self) -> None:
        """run.json, replaced atomically so a reader never sees half a file."""
        target = self.path / "run.json"
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.meta, indent=2, default=str) + "\n", "utf-8")
        os.replace(temporary, target)

    def finish(self, *, status: str = "finished") -> None:
        """Flush every record, close the window and mark the run finished."""
        self.writer.close()
        ended = time.time()
        self.meta["status"] = status
        self.meta["window"]["end_unix_s"] = ended
        self.meta["ended_at"] = datetime.fromtimestamp(ended, tz=UTC).isoformat()
        self.meta["records"] = {"total": self.writer.count, **self.counts}
        self.write_meta()
