"""Who owns what: a Redis pool sized and bounded, never mistaken for a dead store when full;
a cache shared by clients outlives each of them; a backend that answers ends DOWN at once;
a damaged disk store is set aside, not fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio

from microcall import AsyncClient
from microcall._response import CacheStatus
from microcall.cache import BackendBusy, DiskBackend, Entry, RedisBackend, ResponseCache
from microcall.cache._health import BackendHealth
from microcall.testing import FakeClock, Reply

from .conftest import ServerProcess
from .helpers import EPOCH, Service, make_client

CACHED = {"Cache-Control": "max-age=600"}


async def _keys(port: int, namespace: str) -> int:
    reader = redis.asyncio.Redis(port=port)
    try:
        return len([key async for key in reader.scan_iter(f"{namespace}:*")])
    finally:
        await reader.aclose()


async def test_200_concurrent_misses_against_redis_store_200_entries(
    redis_server: ServerProcess, namespace: str
) -> None:
    service = Service(Reply(200, content=b"x", headers=CACHED))
    backend = RedisBackend(f"redis://127.0.0.1:{redis_server.port}/0")
    client, cache, _ = make_client(service, backend=backend, namespace=namespace)
    async with cache, client:
        answers = await asyncio.gather(*(client.get(f"/books/{n}") for n in range(200)))
        assert not cache.backend_failing
        stored = await _keys(redis_server.port, namespace)
    assert {answer.cache_status for answer in answers} == {CacheStatus.MISS}
    assert cache.stats.backend_errors == 0
    assert cache.stats.stored == 200
    assert stored == 200


async def test_operations_beyond_max_connections_wait_for_one(
    redis_server: ServerProcess, namespace: str
) -> None:
    service = Service(Reply(200, content=b"x", headers=CACHED))
    backend = RedisBackend(
        f"redis://127.0.0.1:{redis_server.port}/0", max_connections=2, timeout=5.0
    )
    client, cache, _ = make_client(service, backend=backend, namespace=namespace)
    async with cache, client:
        await asyncio.gather(*(client.get(f"/books/{n}") for n in range(100)))
        stored = await _keys(redis_server.port, namespace)
    assert stored == 100
    assert cache.stats.busy == 0


async def test_a_full_pool_of_your_own_is_busy_not_failing(
    redis_server: ServerProcess, namespace: str
) -> None:
    pool = redis.asyncio.ConnectionPool(port=redis_server.port, max_connections=1)
    own = redis.asyncio.Redis(connection_pool=pool)
    service = Service(Reply(200, content=b"x", headers=CACHED))
    client, cache, _ = make_client(service, backend=RedisBackend(client=own), namespace=namespace)
    try:
        async with client:
            answers = await asyncio.gather(*(client.get(f"/books/{n}") for n in range(20)))
    finally:
        await own.aclose()
        await pool.disconnect()
    assert [answer.status_code for answer in answers] == [200] * 20
    assert cache.stats.busy > 0
    assert cache.stats.backend_errors == 0
    assert not cache.backend_failing


class BusyBackend:
    """Always out of connections."""

    async def get(self, key: str) -> Entry | None:
        raise BackendBusy("no connection free")

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        raise BackendBusy("no connection free")

    async def delete(self, keys: Sequence[str]) -> None:
        raise BackendBusy("no connection free")

    async def aclose(self) -> None:
        pass


async def test_a_busy_backend_is_a_miss_for_that_call_only() -> None:
    service = Service(Reply(200, content=b"x", headers=CACHED))
    client, cache, _ = make_client(service, backend=BusyBackend())
    async with client:
        answers = [await client.get("/a") for _ in range(3)]
        await client.post("/a")
    assert [answer.cache_status for answer in answers] == [CacheStatus.MISS] * 3
    assert service.count == 4  # every call went to the service, none was held up
    assert cache.stats.busy == 3 + 3 + 1  # reads, writes, the invalidation
    assert cache.stats.backend_errors == 0
    assert not cache.backend_failing


# ------------------------------------------------------------ ownership


async def test_closing_one_client_leaves_a_shared_cache_working(
    redis_server: ServerProcess, namespace: str
) -> None:
    service = Service(Reply(200, content=b"x", headers=CACHED))
    cache = ResponseCache(
        RedisBackend(f"redis://127.0.0.1:{redis_server.port}/0"), namespace=namespace
    )
    first = AsyncClient("http://svc:8080", transport=service.transport, cache=cache)
    second = AsyncClient("http://svc:8080", transport=service.transport, cache=cache)
    async with cache, second:
        async with first:
            assert (await first.get("/a")).cache_status is CacheStatus.MISS
            # Lookups of the other client in flight when the first one closes.
            during = [asyncio.create_task(second.get(f"/b/{n}")) for n in range(20)]
            await asyncio.sleep(0)
        answers = await asyncio.gather(*during)
        hit = await second.get("/a")
    assert {answer.status_code for answer in answers} == {200}
    assert hit.cache_status is CacheStatus.HIT
    assert cache.stats.backend_errors == 0
    assert cache.stats.stored == 21


# ------------------------------------------------------------ health


def test_a_success_while_down_ends_down() -> None:
    clock = FakeClock(EPOCH)
    health = BackendHealth("B", retry_after=5.0, warn_every=60.0)
    health.failed(RuntimeError("refused"), "get", clock.now())
    assert health.failing
    assert not health.available(clock.now())
    clock.advance(1)
    health.succeeded()  # an operation begun before the failure answered after it
    assert not health.failing
    assert health.available(clock.now())  # so writes are not skipped either


# ------------------------------------------------------------ a damaged disk store


def test_a_corrupt_disk_store_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache.db").write_bytes(b"\x00garbage, not a database\xff" * 200)
    caplog.set_level(logging.WARNING, logger="microcall.cache")
    DiskBackend(tmp_path)
    aside = [path.name for path in tmp_path.iterdir() if path.name.startswith("cache.db.corrupt")]
    warnings = [r.getMessage() for r in caplog.records if r.name == "microcall.cache"]
    assert len(aside) == 1
    assert len(warnings) == 1
    assert aside[0] in warnings[0]


async def test_a_store_set_aside_starts_empty_and_works(tmp_path: Path) -> None:
    (tmp_path / "cache.db").write_bytes(b"not sqlite" * 100)
    service = Service(Reply(200, content=b"x", headers=CACHED))
    client, cache, _ = make_client(service, backend=DiskBackend(tmp_path))
    async with cache, client:
        first = await client.get("/a")
        second = await client.get("/a")
    assert (first.cache_status, second.cache_status) == (CacheStatus.MISS, CacheStatus.HIT)
