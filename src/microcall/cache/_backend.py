"""The backend interface: where a ResponseCache keeps its entries.

Four come with microcall: :class:`MemoryBackend` (this process, LRU with size
and TTL bounds), :class:`DiskBackend` (one host, survives restarts),
:class:`RedisBackend` and :class:`MemcachedBackend` (shared by hosts). Any
object with these four coroutines is a backend::

    class CacheBackend(Protocol):
        async def get(self, key: str) -> Entry | None       # None: absent
        async def set(self, key: str, entry: Entry, ttl: float) -> None
        async def delete(self, keys: Sequence[str]) -> None
        async def aclose(self) -> None

A backend that keeps bytes stores them with :class:`EntryCodec` (never
pickle) and raises :class:`UnreadableEntry` from ``get`` for bytes that do not
decode; the cache counts those and treats them as a miss. Any other
exception means the backend is failing: the cache logs it (rate-limited),
calls go uncached for a while, then it tries the backend again, except
:class:`BackendBusy`: the store is there but has no free connection for this
operation right now, so this one call goes without it (a miss, or a write
skipped) and the next call tries again; and :class:`EntryTooLarge` from
``set``: the store works, but will not keep this entry (memcached's item
limit), which is skipped and counted.

``aclose`` releases connections and threads; a backend stays usable after it
and reconnects on its next use. Whoever makes a backend owns it: the
:class:`ResponseCache` over it closes it when the cache's own creator calls
``cache.aclose()``; a client never closes a cache it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from microcall.cache._entry import Entry


class EntryTooLarge(Exception):
    """The store will not keep an entry this large: it is not stored, and the backend is fine."""


class BackendBusy(Exception):
    """The store is answering but has no capacity for this operation now (a full connection pool).

    Raised by a backend instead of waiting longer than its timeout for a
    connection; the cache treats it as a miss (or a skipped write) for this
    call only, never as a failing backend.
    """


class CacheBackend(Protocol):
    """Where a :class:`ResponseCache` keeps entries (see the module documentation)."""

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, or None when there is none."""
        ...

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        """Store ``entry`` under ``key`` for ``ttl`` seconds (> 0)."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove the entries under ``keys`` (absent keys are fine)."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the backend reconnects if used again."""
        ...
