"""SIGINT and SIGTERM for a command that runs load tests in child processes (`kvswarm demo`).

Python's defaults would end such a command badly: SIGTERM kills it at once, its target
and its load test left running; SIGINT (Ctrl-C) reaches the whole process group, so the
load test may get it twice. Within `interruptible()` the first of either raises
`Interrupted` wherever the command is, so its `finally` blocks and context managers stop
what it started; a child load test is given the same signal (`pass_on`), closes its run
as interrupted by it, and is waited for.

    try:
        with interruptible():
            run_everything()
    except Interrupted as stop:
        print(f"{stop.name} received: stopped")
        return stop.exit_code
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["STOP_TIMEOUT_S", "Interrupted", "interruptible", "pass_on"]

# How long a load test gets to close its run after the signal before it is killed.
STOP_TIMEOUT_S = 60.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGINT or SIGTERM arrived. A BaseException, as KeyboardInterrupt is: code that
    catches `Exception` lets it through."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"{self.name} received")

    @property
    def exit_code(self) -> int:
        """The shell's code for a process a signal ended: 128 + the signal's number."""
        return 128 + self.signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Within: the first SIGINT or SIGTERM raises `Interrupted`; later ones are ignored,
    so they do not cut short the stop the first one began (whose waits are bounded).
    Outside the main thread, where signals cannot be handled, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def pass_on(process: subprocess.Popen, signum: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Give a child the signal this process got and wait for it to end (SIGKILL after
    `timeout_s`). Start the child with `start_new_session=True`, so that a Ctrl-C reaches
    it this way only, once."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
