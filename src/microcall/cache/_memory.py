"""MemoryBackend: entries kept in this process, least recently used dropped first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from cachetools import TLRUCache

from microcall._durations import Seconds, to_seconds
from microcall._validate import positive_int
from microcall.cache._entry import Entry

# Enough for tens of thousands of typical JSON answers between services, small
# next to a service's own memory.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_Item = tuple[float, Entry]  # (expires at, by the backend's timer; the entry)


def _expires(key: str, item: _Item, now: float) -> float:
    return item[0]


def _size(item: _Item) -> int:
    return item[1].size


class MemoryBackend:
    """Entries in this process's memory (cachetools' TLRU cache).

    Bounded two ways: the entries' approximate size in bytes stays under
    ``max_bytes`` (the least recently used go first), and an entry is dropped
    when its TTL ends, or after ``max_ttl`` seconds if that is shorter.
    Entries are stored as objects, not bytes: nothing is encoded, and a hit
    costs a dictionary lookup. Safe to share between clients on different
    threads (a lock guards it).
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_ttl: Seconds | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        positive_int("max_bytes", max_bytes, what="a byte count")
        self._max_ttl = None if max_ttl is None else to_seconds(max_ttl, name="max_ttl")
        self._timer = timer
        self._entries: TLRUCache[str, _Item] = TLRUCache(
            maxsize=max_bytes, ttu=_expires, timer=timer, getsizeof=_size
        )
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Approximate bytes held now."""
        return int(self._entries.currsize)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    async def get(self, key: str) -> Entry | None:
        with self._lock:
            item = self._entries.get(key)
        return None if item is None else item[1]

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        if self._max_ttl is not None:
            ttl = min(ttl, self._max_ttl)
        with self._lock:
            try:
                self._entries[key] = (self._timer() + ttl, entry)
            except ValueError:  # larger than the whole cache: not kept
                self._entries.pop(key, None)

    async def delete(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    async def aclose(self) -> None:
        pass
