"""Handles of the servers kvswarm starts itself (the simulator, llama.cpp, vLLM): stopped
by `stop()`, at the end of a `with` block, and — for a child process — when the handle is
garbage-collected or Python exits."""

from __future__ import annotations

import subprocess
import weakref
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = ["ServerHandle", "ServerProcess", "terminate"]


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; nothing when it has already ended."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerHandle:
    """A server to stop: `stop()`, or leave its `with` block."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProcess(ServerHandle):
    """A server in a child process whose output goes to `log_path`.

    For dataclasses holding `process`, `log_path` and `remove_log_on_stop`; call
    `watch_process()` from `__post_init__`. A subclass that must end more than the process
    itself (a process group) overrides `end_process`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    remove_log_on_stop: bool
    stop_timeout_s: ClassVar[float] = 10.0

    @staticmethod
    def end_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
        terminate(process, timeout_s)

    def watch_process(self) -> None:
        """Kill the process when this handle is garbage-collected or Python exits."""
        self._finalizer = weakref.finalize(self, self.end_process, self.process, 0.0)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float | None = None) -> None:
        """End the server: SIGTERM, then SIGKILL after `timeout_s` (the class's
        `stop_timeout_s` by default). Safe to call twice."""
        self.end_process(self.process, self.stop_timeout_s if timeout_s is None else timeout_s)
        self._finalizer.detach()
        if self.remove_log_on_stop:
            self.log_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
