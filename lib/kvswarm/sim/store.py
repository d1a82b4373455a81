"""Where the PD stack's KV blocks go: a Mooncake store, or an in-process stand-in.

Both implement `KVStore`. `MooncakeStore` is a real `MooncakeDistributedStore` client
(the `mooncake` extra: PyPI `mooncake-transfer-engine-non-cuda`) talking TCP to a
`mooncake_master` on loopback, with the `P2PHANDSHAKE` metadata mode, so no etcd or
metadata server is needed. Its calls block the calling thread (they release the GIL), so
callers on the gevent loop run them in the hub's thread pool (`blocking` says so).
`MemoryStore` keeps values in a dict with an LRU byte capacity.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from kvswarm.errors import KvswarmError


class KVStore(Protocol):
    """A key-value store of KV-cache chunks."""

    name: str
    blocking: bool

    def exists(self, keys: Sequence[str]) -> list[bool]: ...

    def put(self, key: str, value: bytes) -> bool: ...

    def get(self, key: str) -> bytes | None: ...

    def close(self) -> None: ...


class MemoryStore:
    """An in-process store: a dict with an LRU capacity in bytes."""

    name = "memory"
    blocking = False

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self.puts = 0
        self.gets = 0

    def exists(self, keys: Sequence[str]) -> list[bool]:
        return [key in self._values for key in keys]

    def put(self, key: str, value: bytes) -> bool:
        self.puts += 1
        if len(value) > self.capacity_bytes:
            return False
        old = self._values.pop(key, None)
        if old is not None:
            self._size -= len(old)
        self._values[key] = value
        self._size += len(value)
        while self._size > self.capacity_bytes:
            _, evicted = self._values.popitem(last=False)
            self._size -= len(evicted)
        return True

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def close(self) -> None:
        self._values.clear()
        self._size = 0


def _quiet_mooncake() -> None:
    # Mooncake's client logs every connection at INFO level on stderr unless told
    # otherwise, and reads the setting when its library loads.
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")


def mooncake_installed() -> bool:
    """Whether the `mooncake` extra's store client can be imported."""
    _quiet_mooncake()
    try:
        return importlib.util.find_spec("mooncake.store") is not None
    except ImportError:
        return False


class MooncakeStore:
    """A Mooncake store client over TCP, registered with the master at `master_address`."""

    name = "mooncake"
    blocking = True

    def __init__(
        self,
        master_address: str,
        local_hostname: str,
        segment_bytes: int,
        buffer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        _quiet_mooncake()
        try:
            from mooncake.store import MooncakeDistributedStore
        except ImportError as exc:
            raise KvswarmError(
                "the Mooncake store needs the mooncake extra "
                f"(pip install 'kvswarm[mooncake]' and apt-get install libibverbs1): {exc}"
            ) from None
        self._store = MooncakeDistributedStore()
        code = self._store.setup(
            local_hostname,
            "P2PHANDSHAKE",
            segment_bytes,
            buffer_bytes,
            "tcp",
            "",
            master_address,
        )
        if code != 0:
            raise KvswarmError(
                f"the Mooncake store client could not register with the master at "
                f"{master_address} (setup returned {code})"
            )

    def exists(self, keys: Sequence[str]) -> list[bool]:
        return [result == 1 for result in self._store.batch_is_exist(list(keys))]

    def put(self, key: str, value: bytes) -> bool:
        return self._store.put(key, value) == 0

    def get(self, key: str) -> bytes | None:
        value = self._store.get(key)
        return value or None

    def close(self) -> None:
        self._store.close()
