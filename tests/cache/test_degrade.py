"""A cache store that goes down mid-test: calls go on uncached, one warning is logged,
and the cache comes back when the store does. Never a failed call."""

from __future__ import annotations

import logging

import pytest

from microcall._response import CacheStatus
from microcall.cache import MemcachedBackend, RedisBackend
from microcall.testing import Reply

from .conftest import ServerProcess
from .helpers import Service, make_client

RETRY_AFTER = 5.0  # ResponseCache's default


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "microcall.cache" and record.levelno == logging.WARNING
    ]


async def test_redis_stopped_mid_test(
    own_redis: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(Reply(200, content=b"fresh", headers={"Cache-Control": "max-age=600"}))
    backend = RedisBackend(f"redis://127.0.0.1:{own_redis.port}/0")
    client, cache, clock = make_client(service, backend=backend)
    caplog.set_level(logging.INFO, logger="microcall.cache")
    async with cache, client:
        assert (await client.get("/a")).cache_status is CacheStatus.MISS
        assert (await client.get("/a")).cache_status is CacheStatus.HIT

        own_redis.stop()
        during = [await client.get("/a") for _ in range(5)]
        assert cache.backend_failing
        clock.advance(RETRY_AFTER + 1)
        after_retry = await client.get("/a")  # tried again, still down
        assert len(warnings_in(caplog)) == 1  # rate-limited: one warning

        own_redis.start()  # the same port: the store is back, empty
        clock.advance(RETRY_AFTER + 1)
        refilled = await client.get("/a")
        back = await client.get("/a")

    assert all(answer.status_code == 200 for answer in [*during, after_retry, refilled])
    assert all(answer.content == b"fresh" for answer in during)
    assert [answer.cache_status for answer in during] == [CacheStatus.MISS] * 5
    assert service.count == 1 + 5 + 1 + 1  # the 5 uncached calls, the retry, the refill
    assert refilled.cache_status is CacheStatus.MISS
    assert back.cache_status is CacheStatus.HIT
    assert not cache.backend_failing
    assert cache.stats.backend_errors >= 2
    (warning,) = warnings_in(caplog)
    assert "RedisBackend" in warning
    assert "calls go uncached" in warning
    assert any("answers again" in record.getMessage() for record in caplog.records)


async def test_a_redis_that_was_never_there(caplog: pytest.LogCaptureFixture) -> None:
    from .conftest import free_port

    service = Service(Reply(200, headers={"Cache-Control": "max-age=60"}))
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")
    client, cache, _ = make_client(service, backend=backend)
    async with cache, client:
        answers = [await client.get("/a") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200] * 3
    assert service.count == 3
    # One failed read; then the backend is left alone.
    assert cache.stats.backend_errors == 1
    assert len(warnings_in(caplog)) == 1


async def test_memcached_stopped_mid_test(caplog: pytest.LogCaptureFixture) -> None:
    from .conftest import _started, memcached_process

    memcached = _started(memcached_process)
    try:
        service = Service(Reply(200, headers={"Cache-Control": "max-age=60"}))
        backend = MemcachedBackend("127.0.0.1", memcached.port)
        client, cache, _ = make_client(service, backend=backend)
        async with cache, client:
            await client.get("/a")
            assert (await client.get("/a")).cache_status is CacheStatus.HIT
            memcached.stop()
            answers = [await client.get("/a") for _ in range(3)]
        assert [answer.status_code for answer in answers] == [200] * 3
        assert cache.backend_failing
        assert len(warnings_in(caplog)) == 1
    finally:
        memcached.stop()
