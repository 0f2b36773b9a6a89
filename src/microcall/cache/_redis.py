"""RedisBackend: entries in Redis (redis-py's asyncio client), shared by every host."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from microcall._durations import Seconds, to_seconds
from microcall._validate import positive_int
from microcall.cache._backend import BackendBusy
from microcall.cache._codec import EntryCodec, UnreadableEntry
from microcall.cache._entry import Entry
from microcall.errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

# A cache read that takes longer than this is not worth waiting for: the
# service itself answers in a few milliseconds. Redis on a LAN answers in
# well under one.
DEFAULT_TIMEOUT = 0.25

# Connections to Redis per backend. A cache operation holds one for a round
# trip (a fraction of a millisecond on a LAN), so 50 serve tens of thousands
# of operations a second, more than one client process makes; and Redis's
# own limit (maxclients, 10,000) is shared by every process of every host.
# Operations beyond it wait for a connection, up to the timeout.
DEFAULT_MAX_CONNECTIONS = 50


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

    At most ``max_connections`` operations run at once (the pool made from
    ``url`` holds that many connections). One more waits up to ``timeout``
    for a free connection and is then given up as :class:`BackendBusy`: that
    call is a miss, or its write is skipped, and Redis is not counted as
    failing. A full pool of a ``client`` of your own (redis-py's
    ``MaxConnectionsError``) counts the same way.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        timeout: Seconds = DEFAULT_TIMEOUT,
        signing_key: bytes | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisBackend takes a url or a client (one of them)")
        seconds = to_seconds(timeout, name="timeout")
        positive_int("max_connections", max_connections)
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import MaxConnectionsError
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "RedisBackend needs redis: pip install 'microcall[redis]'"
            ) from exc
        self._codec = EntryCodec(signing_key)
        self._owned = client is None
        self._timeout = seconds
        self._pool_full: type[Exception] = MaxConnectionsError
        # Bounds the operations in progress, so the pool is never asked for
        # more connections than it has; a wait for one has a deadline of its own.
        self._slots = asyncio.Semaphore(max_connections)
        if client is None:
            pool = BlockingConnectionPool.from_url(
                str(url),
                max_connections=max_connections,
                timeout=seconds,
                socket_timeout=seconds,
                socket_connect_timeout=seconds,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
            client = Redis.from_pool(pool)
        self._redis: Any = client

    async def _run(self, command: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """``command(*args, **kwargs)`` on a free connection, or BackendBusy after ``timeout``."""
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self._timeout):
                    await slots.acquire()
            except TimeoutError:
                raise BackendBusy(f"no Redis connection free within {self._timeout:g} s") from None
        else:
            await slots.acquire()
        try:
            return await command(*args, **kwargs)
        except self._pool_full as exc:
            raise BackendBusy(str(exc)) from exc
        finally:
            slots.release()

    async def get(self, key: str) -> Entry | None:
        data = await self._run(self._redis.get, key)
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise UnreadableEntry(f"not bytes: {type(data).__name__}")
        return self._codec.decode(data)

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        data = self._codec.encode(entry)
        await self._run(self._redis.set, key, data, px=max(1, math.ceil(ttl * 1000)))

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._run(self._redis.delete, *keys)

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()
