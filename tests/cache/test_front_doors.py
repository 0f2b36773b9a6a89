"""Caching through all three front doors, and with retries and hedging: a cached answer
is never an attempt, and the engine's strategies run unchanged on a miss."""

from __future__ import annotations

import asyncio

import pytest

from microcall import (
    AsyncClient,
    Client,
    ConfigurationError,
    FuturesClient,
    UsageError,
    hedged,
    retry,
)
from microcall._response import CacheStatus
from microcall.cache import CachePolicy, MemoryBackend, ResponseCache
from microcall.policy.backoff import Backoff
from microcall.testing import MockTransport, Reply

from .helpers import Service, make_client

CACHED = {"Cache-Control": "max-age=60"}


def test_the_blocking_client_caches() -> None:
    transport = MockTransport(lambda request: Reply(200, content=b"x", headers=CACHED))
    cache = ResponseCache()
    with Client("http://svc:8080", transport=transport, cache=cache) as client:
        first = client.get("/a")
        second = client.get("/a")
        bypassed = client.get("/a", cache=False)
    assert (first.cache_status, second.cache_status) == (CacheStatus.MISS, CacheStatus.HIT)
    assert bypassed.cache_status is None
    assert len(transport.sent) == 2


def test_the_futures_client_caches_and_coalesces() -> None:
    transport = MockTransport(lambda request: Reply(200, content=b"x", headers=CACHED, delay=0.2))
    cache = ResponseCache()
    with FuturesClient("http://svc:8080", transport=transport, cache=cache) as client:
        futures = [client.get("/a") for _ in range(20)]
        answers = [future.result(timeout=30) for future in futures]
        later = client.get("/a").result(timeout=30)
    assert len(transport.sent) == 1
    assert {answer.content for answer in answers} == {b"x"}
    assert later.cache_status is CacheStatus.HIT


async def test_a_retried_miss_is_stored_and_the_hit_has_no_attempts() -> None:
    replies = iter([Reply(503), Reply(503), Reply(200, content=b"ok", headers=CACHED)])
    service = Service(lambda request: next(replies))
    client, _, _ = make_client(service, strategy=retry(3, backoff=Backoff(base=0.0)))
    budget_before = client.budget
    async with client:
        miss = await client.get("/a")
        hit = await client.get("/a")
    assert [attempt.status for attempt in miss.attempts] == [503, 503, 200]
    assert miss.cache_status is CacheStatus.MISS
    assert hit.cache_status is CacheStatus.HIT
    assert hit.attempts == ()
    assert service.count == 3
    assert budget_before is client.budget


async def test_hedging_on_a_miss_and_a_hit_without_attempts() -> None:
    replies = iter(
        [
            Reply(200, content=b"slow", headers=CACHED, delay=5),
            Reply(200, content=b"hedge", headers=CACHED),
        ]
    )
    service = Service(lambda request: next(replies))
    client, _, _ = make_client(service, strategy=hedged(0.01))
    async with client:
        miss = await client.get("/a")
        hit = await client.get("/a")
    assert miss.content == b"hedge"
    assert [attempt.kind.value for attempt in miss.attempts] == ["first", "hedge"]
    assert hit.content == b"hedge"
    assert hit.attempts == ()
    assert service.count == 2


async def test_revalidation_goes_through_the_strategy() -> None:
    def reply(request: object) -> Reply:
        headers = getattr(request, "headers", {})
        if headers.get("If-None-Match") == '"v1"':
            return Reply(304, headers={"ETag": '"v1"'})
        return Reply(200, content=b"body", headers={"ETag": '"v1"', "Cache-Control": "no-cache"})

    service = Service(reply)  # type: ignore[arg-type]
    client, _, _ = make_client(service, strategy=retry(2, backoff=Backoff(base=0.0)))
    async with client:
        await client.get("/a")
        answer = await client.get("/a")
    assert answer.cache_status is CacheStatus.REVALIDATED
    assert answer.content == b"body"


async def test_options_and_posts_pass_through() -> None:
    service = Service(Reply(200, headers=CACHED))
    client, cache, _ = make_client(service)
    async with client:
        options = await client.options("/a")
        posted = await client.post("/a", json={"x": 1})
    assert options.cache_status is posted.cache_status is None
    assert cache.stats.misses == 0


async def test_a_client_without_a_cache_refuses_a_per_call_policy() -> None:
    transport = MockTransport(lambda request: Reply(200))
    async with AsyncClient("http://svc:8080", transport=transport) as client:
        plain = await client.get("/a", cache=True)
        unchanged = await client.get("/a", cache=False)
        with pytest.raises(UsageError, match="needs a client made with cache="):
            await client.get("/a", cache=CachePolicy(ttl=5))
        with pytest.raises(UsageError, match="cache= takes"):
            await client.get("/a", cache="yes")  # type: ignore[typeddict-item]
    assert plain.cache_status is unchanged.cache_status is None


def test_the_cache_option_is_checked_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="ResponseCache"):
        AsyncClient("http://svc:8080", cache=MemoryBackend())  # type: ignore[typeddict-item]


async def test_closing_the_client_releases_the_cache_which_stays_usable() -> None:
    transport = MockTransport(lambda request: Reply(200, headers=CACHED))
    cache = ResponseCache()
    async with AsyncClient("http://svc:8080", transport=transport, cache=cache) as one:
        await one.get("/a")
    async with AsyncClient("http://svc:8080", transport=transport, cache=cache) as two:
        assert (await two.get("/a")).cache_status is CacheStatus.HIT
    assert two.cache is cache


async def test_a_hit_costs_no_call_of_the_engine_and_no_observer_call() -> None:
    seen: list[str] = []

    class Recorder:
        def call_started(self, request: object) -> None:
            seen.append("call")

    service = Service(Reply(200, headers=CACHED))
    client, _, _ = make_client(service, observers=[Recorder()])
    async with client:
        await asyncio.gather(client.get("/a"))
        await client.get("/a")
        await client.get("/a")
    assert seen == ["call"]
