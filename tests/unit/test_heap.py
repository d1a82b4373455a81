"""The load generator keeps freed memory for the next request (kvswarm.heap).

Each case runs in a fresh interpreter, since glibc's thresholds belong to the process, and
counts the page faults of a long-context request's allocations: blocks of ~150-190 kB
made and freed again and again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
from kvswarm.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(300):
    body = b"y" * (150_000 + 137 * i)
    request = b"POST /v1/chat/completions" + body
    del body, request
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(
    not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"), reason="glibc's allocator"
)


def probe(mode: str, **env: str) -> tuple[bool, int]:
    """(whether the thresholds were set, page faults over the 300 requests)"""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_freed_blocks_are_reused_without_faulting_pages_in_again() -> None:
    kept, faults = probe("keep")
    _, default_faults = probe("default")
    assert kept
    # By default every request maps its blocks afresh: ~40 faults each.
    assert default_faults > 300 * 20
    assert faults < default_faults / 20


@glibc
def test_the_users_own_malloc_settings_are_left_alone() -> None:
    kept, faults = probe("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert not kept
    assert faults > 300 * 20
