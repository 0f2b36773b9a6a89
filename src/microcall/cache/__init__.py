"""Response caching for microcall's clients: HTTP semantics over a choice of stores.

::

    from microcall import AsyncClient
    from microcall.cache import CachePolicy, RedisBackend, ResponseCache

    cache = ResponseCache(RedisBackend("redis://cache:6379/0"),
                          CachePolicy(default_ttl=30, stale_if_error=300))
    async with AsyncClient("http://catalog:8080", cache=cache) as client:
        await client.get("/books/1")               # MISS: sent, stored
        await client.get("/books/1")               # HIT: nothing sent
        await client.get("/books/1", cache=False)  # bypass for this call

Caching is off unless a client is given a cache. GET and HEAD answers are
kept as RFC 9111 says (Cache-Control, Expires, ETag / Last-Modified
revalidation, Vary), with a TTL of the policy's own for services that send
no caching headers; concurrent identical calls send one request; a stale
answer can stand in for a failing service; a failing store never fails a
call. See docs/caching.md.
"""

from microcall._response import CacheStatus
from microcall.cache._backend import BackendBusy, CacheBackend, EntryTooLarge
from microcall.cache._cache import WALL_CLOCK, ResponseCache, WallClock
from microcall.cache._codec import EntryCodec, UnreadableEntry
from microcall.cache._disk import DiskBackend
from microcall.cache._entry import Entry
from microcall.cache._memcached import MemcachedBackend
from microcall.cache._memory import MemoryBackend
from microcall.cache._policy import CachePolicy
from microcall.cache._redis import RedisBackend
from microcall.cache._stats import CacheEvent, CacheListener, CacheStats

__all__ = [
    "WALL_CLOCK",
    "BackendBusy",
    "CacheBackend",
    "CacheEvent",
    "CacheListener",
    "CachePolicy",
    "CacheStats",
    "CacheStatus",
    "DiskBackend",
    "Entry",
    "EntryCodec",
    "EntryTooLarge",
    "MemcachedBackend",
    "MemoryBackend",
    "RedisBackend",
    "ResponseCache",
    "UnreadableEntry",
    "WallClock",
]
