"""Each backend against the real thing (redis-server, memcached, a directory): round trips,
expiry, deletion, and poisoned entries read back as misses, never as errors."""

from __future__ import annotations

import pickle
import socket
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from pymemcache.client.base import Client as MemcacheClient

from microcall._request import Request
from microcall._response import CacheStatus
from microcall.cache import (
    DiskBackend,
    Entry,
    EntryCodec,
    EntryTooLarge,
    MemcachedBackend,
    MemoryBackend,
    RedisBackend,
    UnreadableEntry,
)
from microcall.cache._backend import CacheBackend
from microcall.cache._keys import url_key
from microcall.testing import FakeClock, Reply

from .conftest import ServerProcess, _started, memcached_process
from .helpers import EPOCH, Service, make_client


def entry(body: bytes = b"payload", url: str = "http://svc:8080/a") -> Entry:
    return Entry(
        method="GET",
        url=url,
        status=200,
        reason="OK",
        headers=(("Content-Type", "text/plain"),),
        body=body,
        final_url="",
        born=EPOCH,
        fresh_until=EPOCH + 60,
        stale_if_error=0.0,
        must_revalidate=False,
    )


class Store:
    """A backend under test, and a way to write raw bytes under one of its keys."""

    def __init__(self, backend: CacheBackend, write_raw: Callable[[str, Any], None]) -> None:
        self.backend = backend
        self.write_raw = write_raw


async def _store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "memory":
        return Store(MemoryBackend(), lambda key, value: None)
    if kind == "disk":
        disk = DiskBackend(tmp_path / "cache")
        return Store(disk, lambda key, value: disk._store.set(key, value))
    if kind == "redis":
        server: ServerProcess = request.getfixturevalue("redis_server")
        native = redis.Redis(port=server.port)
        return Store(RedisBackend(f"redis://127.0.0.1:{server.port}/0"), native.set)
    server = request.getfixturevalue("memcached_server")
    native_mc = MemcacheClient(("127.0.0.1", server.port))

    def write(key: str, value: Any) -> None:
        native_mc.set(key, value, noreply=False)

    return Store(MemcachedBackend("127.0.0.1", server.port), write)


@pytest.fixture(params=["memory", "disk", "redis", "memcached"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each backend in turn."""
    made = await _store(request.param, request, tmp_path)
    yield made
    await made.backend.aclose()


@pytest.fixture(params=["disk", "redis", "memcached"])
async def byte_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each backend that keeps bytes (a memory backend keeps the entry objects themselves)."""
    made = await _store(request.param, request, tmp_path)
    yield made
    await made.backend.aclose()


async def test_round_trip_and_delete(store: Store, namespace: str) -> None:
    backend = store.backend
    key, other = f"{namespace}:one", f"{namespace}:two"
    assert await backend.get(key) is None
    await backend.set(key, entry(), 60)
    await backend.set(other, entry(b"2"), 60)
    assert await backend.get(key) == entry()
    await backend.delete([key, f"{namespace}:absent"])
    assert await backend.get(key) is None
    assert await backend.get(other) == entry(b"2")
    await backend.delete([])


async def test_a_large_body_round_trips(store: Store, namespace: str) -> None:
    big = entry(bytes(range(256)) * 2000)  # 512 kB: a file for diskcache, under memcached's limit
    await store.backend.set(f"{namespace}:big", big, 60)
    assert await store.backend.get(f"{namespace}:big") == big


async def test_the_backend_stays_usable_after_aclose(store: Store, namespace: str) -> None:
    await store.backend.set(f"{namespace}:k", entry(), 60)
    await store.backend.aclose()
    assert await store.backend.get(f"{namespace}:k") == entry()


@pytest.mark.parametrize(
    "poison",
    [b"garbage", b"", pickle.dumps({"status": 200}), EntryCodec(b"someone else").encode(entry())],
    ids=["garbage", "empty", "pickle", "foreign-key"],
)
async def test_poisoned_bytes_are_unreadable(
    byte_store: Store, namespace: str, poison: bytes
) -> None:
    byte_store.write_raw(f"{namespace}:k", poison)
    with pytest.raises(UnreadableEntry):
        await byte_store.backend.get(f"{namespace}:k")


async def test_a_poisoned_entry_is_a_miss_then_replaced(byte_store: Store, namespace: str) -> None:
    service = Service(Reply(200, content=b"real", headers={"Cache-Control": "max-age=60"}))
    client, cache, _ = make_client(service, backend=byte_store.backend, namespace=namespace)
    async with client:
        await client.get("/a")
        byte_store.write_raw(url_key(namespace, "GET", "http://svc:8080/a"), b"\x00poison")
        poisoned = await client.get("/a")
        again = await client.get("/a")
    assert poisoned.cache_status is CacheStatus.MISS
    assert poisoned.content == b"real"
    assert again.cache_status is CacheStatus.HIT
    assert cache.stats.unreadable == 1
    assert not cache.backend_failing


async def test_a_pickled_value_in_diskcache_is_never_loaded(tmp_path: Path) -> None:
    disk = DiskBackend(tmp_path)
    disk._store.set("k", {"would": "unpickle"})  # diskcache pickles what is not bytes
    with pytest.raises(UnreadableEntry):
        await disk.get("k")
    await disk.aclose()


# ---------------------------------------------------------------- expiry


async def test_memory_expires_entries_and_bounds_size() -> None:
    clock = FakeClock()
    memory = MemoryBackend(max_bytes=4000, max_ttl=30, timer=clock.now)
    await memory.set("short", entry(), 10)
    await memory.set("long", entry(), 100)
    clock.advance(11)
    assert await memory.get("short") is None
    assert await memory.get("long") is not None
    clock.advance(20)  # max_ttl caps the 100 s
    assert await memory.get("long") is None
    for number in range(10):  # each ~1.3 kB: only the latest few fit
        await memory.set(f"k{number}", entry(b"x" * 1000), 100)
    assert await memory.get("k0") is None
    assert await memory.get("k9") is not None
    assert memory.size <= 4000
    await memory.set("huge", entry(b"x" * 5000), 100)  # larger than the whole cache
    assert await memory.get("huge") is None


async def test_redis_sets_the_ttl_in_milliseconds(
    redis_server: ServerProcess, namespace: str
) -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{redis_server.port}/0")
    await backend.set(f"{namespace}:k", entry(), 2.5)
    remaining = redis.Redis(port=redis_server.port).pttl(f"{namespace}:k")
    assert 0 < remaining <= 2500
    await backend.aclose()


async def test_memcached_rounds_the_ttl_up_to_seconds(
    memcached_server: ServerProcess, namespace: str
) -> None:
    backend = MemcachedBackend("127.0.0.1", memcached_server.port)
    await backend.set(f"{namespace}:k", entry(), 2.5)
    with socket.create_connection(("127.0.0.1", memcached_server.port), timeout=5) as connection:
        connection.sendall(f"mg {namespace}:k t\r\n".encode())
        answer = connection.recv(100).decode()
    assert answer.startswith("HD t")
    assert 1 <= int(answer.split()[1][1:]) <= 3
    await backend.aclose()


async def test_memcached_skips_values_over_its_item_limit(
    memcached_server: ServerProcess, namespace: str
) -> None:
    backend = MemcachedBackend("127.0.0.1", memcached_server.port, max_value_bytes=1000)
    with pytest.raises(EntryTooLarge):
        await backend.set(f"{namespace}:k", entry(b"x" * 2000), 60)
    assert await backend.get(f"{namespace}:k") is None
    await backend.aclose()


async def test_an_entry_over_a_servers_own_item_limit_is_skipped_not_a_failure() -> None:
    """memcached -I 512k refuses a 700 kB entry: that entry goes unstored, the backend is fine."""
    server = _started(partial(memcached_process, "-I", "512k"))
    try:
        backend = MemcachedBackend("127.0.0.1", server.port, max_value_bytes=4 * 1024 * 1024)

        def reply(request: Request) -> Reply:
            size = 700_000 if request.url.path == "/big" else 10
            return Reply(200, content=b"x" * size, headers={"Cache-Control": "max-age=60"})

        service = Service(reply)
        client, cache, _ = make_client(service, backend=backend)
        async with cache, client:
            await client.get("/big")
            await client.get("/small")
            again = await client.get("/small")
        assert (cache.stats.too_large, cache.stats.stored) == (1, 1)
        assert cache.stats.backend_errors == 0
        assert not cache.backend_failing
        assert again.cache_status is CacheStatus.HIT
    finally:
        server.stop()


async def test_disk_entries_survive_a_restart(tmp_path: Path) -> None:
    service = Service(Reply(200, content=b"kept", headers={"Cache-Control": "max-age=60"}))
    clock = FakeClock(EPOCH)
    first, first_cache, _ = make_client(service, clock=clock, backend=DiskBackend(tmp_path))
    async with first_cache, first:
        await first.get("/a")
    clock.advance(30)
    second, second_cache, _ = make_client(service, clock=clock, backend=DiskBackend(tmp_path))
    async with second_cache, second:
        answer = await second.get("/a")
    assert answer.cache_status is CacheStatus.HIT
    assert answer.headers["Age"] == "30"
    assert service.count == 1


async def test_every_backend_serves_a_client(store: Store, namespace: str) -> None:
    def reply(request: Request) -> Reply:
        accept = request.headers.get("Accept", "")
        headers = {"Cache-Control": "max-age=60", "Vary": "Accept"}
        return Reply(200, content=accept.encode(), headers=headers)

    service = Service(reply)
    client, cache, _ = make_client(service, backend=store.backend, namespace=namespace)
    async with client:
        for accept in ("a", "b", "a", "b"):
            await client.get("/v", headers={"Accept": accept})
    assert service.count == 2
    assert cache.stats.hits == 2
