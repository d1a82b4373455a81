"""Workarounds for two spots in Locust where a worker burns CPU without yielding.

Locust 2.47 runs both on the worker's event loop, so every first token that arrives
meanwhile is stamped late:

- a worker handling a `spawn` message rebuilds Locust's whole argument parser once per
  option in the message (`default_args_dict()` inside a dict comprehension in
  `WorkerRunner.handle_message`): with kvswarm's options, 58-91 ms per message;
- `Runner.stop()` calls `inspect.stack()`, which reads the source of every frame on the
  stack, to name its caller in one debug line: about 60 ms per stop.

`apply_workarounds()` is the one exception to "no monkey-patching of Locust internals":
each patch is applied only where Locust's code still has the pattern (checked on its
bytecode names, not its version), changes no result a caller reads, and names the upstream
one-line fix that makes it unnecessary.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from types import FrameType

from locust import argument_parser, runners

__all__ = ["apply_workarounds"]


def apply_workarounds() -> None:
    """Apply both workarounds to the imported Locust; calling it again changes nothing."""
    _cache_default_args_dict()
    _cheapen_stop_caller_lookup()


def _cache_default_args_dict() -> None:
    # Upstream fix (locust/argument_parser.py): decorate `default_args_dict` with
    # `@functools.cache`; or, in `WorkerRunner.handle_message` (locust/runners.py), bind
    # `default_args = argument_parser.default_args_dict()` before the comprehension.
    # Remove this once Locust ships either. The dict holds only Locust's own options, fixed
    # for the life of the process, and both callers (the spawn handler and
    # `ui_extra_args_dict`) only test membership in it, so one shared dict is safe.
    current = argument_parser.default_args_dict
    code = getattr(current, "__code__", None)  # absent once cached, by us or upstream
    if code is None or "setup_parser_arguments" not in code.co_names:
        return
    argument_parser.default_args_dict = functools.cache(current)


def _cheapen_stop_caller_lookup() -> None:
    # Upstream fix (locust/runners.py, `Runner.stop`): `inspect.getframeinfo(sys._getframe(1))`
    # instead of `inspect.getframeinfo(inspect.stack()[1][0])`. Remove this once Locust ships it.
    if isinstance(runners.inspect, _SourcelessInspect):
        return
    if not {"stack", "getframeinfo"} <= set(runners.Runner.stop.__code__.co_names):
        return
    runners.inspect = _SourcelessInspect()


class _SourcelessInspect(types.ModuleType):
    """`inspect` as `locust.runners` sees it: `stack()` and `getframeinfo()` name frames
    (file, line, function) without reading any source; everything else is the real module.

    `Runner.stop()` is the only user of `inspect` in `locust.runners`, and its debug line
    prints only the caller's file and line, which these give exactly.
    """

    def __init__(self) -> None:
        super().__init__(inspect.__name__, inspect.__doc__)

    def __getattr__(self, name: str) -> object:
        return getattr(inspect, name)

    @staticmethod
    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        records = []
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            records.append(inspect.FrameInfo(*_frame_fields(frame)))
            frame = frame.f_back
        return records

    @staticmethod
    def getframeinfo(frame: FrameType, context: int = 1) -> inspect.Traceback:
        return inspect.Traceback(*_frame_fields(frame)[1:])


def _frame_fields(frame: FrameType) -> tuple[FrameType, str, int, str, None, None]:
    """A frame record's fields with no source context: frame, file, line, function."""
    return frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None
