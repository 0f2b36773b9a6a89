"""RedisBackend: entries in Redis (redis-py's asyncio client), shared by every host."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from microcall._durations import Seconds, to_seconds
from microcall.cache._codec import EntryCodec, UnreadableEntry
from microcall.cache._entry import Entry
from microcall.errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

# A cache read that takes longer than this is not worth waiting for: the
# service itself answers in a few milliseconds. Redis on a LAN answers in
# well under one.
DEFAULT_TIMEOUT = 0.25


class RedisBackend:
    """Entries in Redis under their keys, as :class:`EntryCodec` bytes, expiring with their TTL.

    ::

        cache = ResponseCache(RedisBackend("redis://cache:6379/0"))

    Give ``url`` (a connection pool is made, with ``timeout`` seconds to
    connect and per command, and no retries: when Redis fails the cache goes
    without it for a while instead of holding calls up), or ``client``, a
    ``redis.asyncio.Redis`` of your own (used as configured, never closed
    here). Like redis-py's asyncio client, a backend belongs to one event
    loop: give clients on other loops (a ``Client``, a ``FuturesClient``) their
    own.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        timeout: Seconds = DEFAULT_TIMEOUT,
        signing_key: bytes | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisBackend takes a url or a client (one of them)")
        seconds = to_seconds(timeout, name="timeout")
        self._codec = EntryCodec(signing_key)
        self._owned = client is None
        if client is None:
            try:
                from redis.asyncio import Redis
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ConfigurationError(
                    "RedisBackend needs redis: pip install 'microcall[redis]'"
                ) from exc
            client = Redis.from_url(
                str(url),
                socket_timeout=seconds,
                socket_connect_timeout=seconds,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
        self._redis: Any = client

    async def get(self, key: str) -> Entry | None:
        data = await self._redis.get(key)
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise UnreadableEntry(f"not bytes: {type(data).__name__}")
        return self._codec.decode(data)

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        await self._redis.set(key, self._codec.encode(entry), px=max(1, math.ceil(ttl * 1000)))

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._redis.delete(*keys)

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()
