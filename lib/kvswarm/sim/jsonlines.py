"""`JsonLines`: the simulator's logs (ground truth, faults), one JSON object per line,
appended unbuffered so a test reading the file mid-run sees every line written."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson

from kvswarm.errors import KvswarmError

__all__ = ["JsonLines", "read_json_lines"]


class JsonLines:
    """A file opened for appending JSON lines; `option` names the flag that asked for it,
    for the one-line error when it cannot be written."""

    def __init__(self, path: str | Path, option: str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[bytes] = open(self.path, "ab", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise KvswarmError(f"{option}: cannot write {self.path} ({exc.strerror})") from None

    def write(self, entry: Any) -> None:
        self._file.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        self._file.close()


def read_json_lines(path: str | Path) -> list[dict[str, Any]]:
    """Every line of such a file, in the order written."""
    with open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]
