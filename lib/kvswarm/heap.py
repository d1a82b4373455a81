"""The load generator's heap: memory freed after one request kept for the next.

A long-context request allocates a few blocks of 100-200 kB (its prompt, the JSON body,
the request's bytes) and frees them once it is sent. By default glibc gives the top of
its heap back to the system as soon as more than 128 kB is free there, and maps blocks
above its (moving) mmap threshold afresh, so each such request grew the heap again, page
by freshly zeroed page: in a process making only LongContextHighReuseUser's prompts and
bodies, 0.21 ms of CPU per request, 0.08 ms with the memory kept (how much it matters
depends on the heap's layout: bench/README.md, fifth pass). `keep_freed_memory()` raises both
thresholds with glibc's `mallopt`: up to 32 MiB may stay free on the heap, and blocks
under 8 MiB come from it. A process holds a few MiB more at most; nothing changes on
other C libraries, or where the user set glibc's malloc variables or tunables.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["keep_freed_memory"]

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 32 << 20
MMAP_THRESHOLD_BYTES = 8 << 20
# Settings of the user's own that these must not override.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process; whether it did."""
    if not _glibc() or any(name in os.environ for name in _USER_SETTINGS):
        return False
    if "malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # The mmap threshold first: setting either one turns off glibc's moving thresholds.
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False
