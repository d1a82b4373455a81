"""Where kvswarm keeps what it builds and generates for llama.cpp, and the lock guarding it.

Everything lives under `${XDG_CACHE_HOME:-~/.cache}/kvswarm/` (override the whole root
with `KVSWARM_CACHE_DIR`), outside any checkout, so a build or a model made once on a
machine serves every later run, test session and working tree on it. Artifacts are
written under a temporary name and renamed into place, so a reader never sees half a
file; the lock keeps two processes from making the same artifact at once.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_DIR_ENV = "KVSWARM_CACHE_DIR"


def cache_root() -> Path:
    """The root of kvswarm's user cache (created on first use by whoever writes to it)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kvswarm"


@contextmanager
def exclusive_lock(path: Path, waiting_message: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` for the `with` block.

    When another process holds it, print `waiting_message` once to stderr and wait. The
    lock dies with its holder, so a killed build never leaves a stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting_message, file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
