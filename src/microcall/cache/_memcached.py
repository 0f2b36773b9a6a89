"""MemcachedBackend: entries in memcached (pymemcache, on the backend's own threads).

Why pymemcache on threads rather than an asyncio client: pymemcache is
maintained, thread-safe through its pooled client, and has connect and
per-operation timeouts; the asyncio memcached clients on PyPI are thin
and see few releases. A hop to a thread costs tens of microseconds, small
next to the network round trip to memcached itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from microcall._durations import Seconds, to_seconds
from microcall._validate import whole
from microcall.cache._backend import EntryTooLarge
from microcall.cache._codec import EntryCodec, UnreadableEntry
from microcall.cache._entry import Entry
from microcall.cache._threaded import Threads
from microcall.errors import ConfigurationError

DEFAULT_TIMEOUT = 0.25  # as for Redis: a slow cache is not worth waiting for
THREADS = 8  # concurrent operations; each holds one pooled connection

# memcached refuses items over 1 MiB by default (-I); key and flags take a little.
MAX_VALUE_BYTES = 1024 * 1024 - 1024

# memcached reads an expiry over 30 days as an absolute Unix time.
MAX_EXPIRE = 30 * 24 * 3600


class MemcachedBackend:
    """Entries in memcached at ``host:port`` as :class:`EntryCodec` bytes.

    ::

        cache = ResponseCache(MemcachedBackend("cache-host", 11211))

    Values are given to pymemcache as bytes with no serializer, so nothing
    read back is ever unpickled. An entry larger than memcached's item limit
    (``max_value_bytes``) is not stored. Expiry is rounded up to whole seconds.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11211,
        *,
        timeout: Seconds = DEFAULT_TIMEOUT,
        max_value_bytes: int = MAX_VALUE_BYTES,
        signing_key: bytes | None = None,
    ) -> None:
        seconds = to_seconds(timeout, name="timeout")
        whole("port", port, minimum=1, maximum=65535, what="a port")
        try:
            from pymemcache.client.base import PooledClient  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "MemcachedBackend needs pymemcache: pip install 'microcall[memcached]'"
            ) from exc
        self._codec = EntryCodec(signing_key)
        self._max_value = max_value_bytes
        self._client: Any = PooledClient(
            (host, port),
            connect_timeout=seconds,
            timeout=seconds,
            no_delay=True,
            max_pool_size=THREADS,
        )
        self._threads = Threads("microcall-memcached", THREADS)

    async def get(self, key: str) -> Entry | None:
        data = await self._threads.run(self._client.get, key)
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise UnreadableEntry(f"not bytes: {type(data).__name__}")
        return self._codec.decode(data)

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        data = self._codec.encode(entry)
        if len(data) > self._max_value:
            raise EntryTooLarge(f"{len(data)} bytes, over max_value_bytes ({self._max_value})")
        expire = min(max(1, math.ceil(ttl)), MAX_EXPIRE)
        try:
            await self._threads.run(self._client.set, key, data, expire=expire, noreply=False)
        except Exception as error:
            # A server started with a smaller item limit (-I) says so for this
            # entry alone: the next, smaller one is stored as usual.
            if "too large" in str(error).lower():
                raise EntryTooLarge(str(error)) from error
            raise

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._threads.run(self._client.delete_many, list(keys), noreply=False)

    async def aclose(self) -> None:
        self._threads.close()
        self._client.close()  # the pool reconnects on the next use
