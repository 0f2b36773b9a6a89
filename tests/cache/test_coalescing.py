"""Single flight against a real aiohttp server: concurrent identical calls send one request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from microcall import AsyncClient, DeadlineExceeded, ReadError
from microcall._response import CacheStatus
from microcall.cache import CachePolicy, MemoryBackend, RedisBackend, ResponseCache
from microcall.cache._backend import CacheBackend

from .conftest import ServerProcess

Serve = Callable[[web.Application], Awaitable[str]]


class Counting:
    """An app whose ``/slow`` answers after ``delay`` seconds and counts each request it gets."""

    def __init__(self, delay: float = 0.3, headers: dict[str, str] | None = None) -> None:
        self.delay = delay
        self.headers = headers if headers is not None else {"Cache-Control": "max-age=60"}
        self.received = 0
        self.arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/fail", self.fail)

    async def slow(self, request: web.Request) -> web.Response:
        self.received += 1
        self.arrived.set()
        await asyncio.sleep(self.delay)
        return web.json_response({"n": self.received}, headers=self.headers)

    async def fail(self, request: web.Request) -> web.Response:
        self.received += 1
        self.arrived.set()
        await asyncio.sleep(self.delay)
        assert request.transport is not None
        request.transport.close()  # the client sees a broken connection
        raise asyncio.CancelledError


async def test_a_cold_stampede_sends_one_request(serve: Serve) -> None:
    app = Counting()
    cache = ResponseCache(MemoryBackend())
    async with cache, AsyncClient(await serve(app.app), cache=cache) as client:
        answers = await asyncio.gather(*(client.get("/slow") for _ in range(200)))
    assert app.received == 1
    assert {answer.json()["n"] for answer in answers} == {1}
    statuses = [answer.cache_status for answer in answers]
    assert statuses.count(CacheStatus.MISS) == 1
    assert statuses.count(CacheStatus.COALESCED) == 199
    assert sum(len(answer.attempts) for answer in answers) == 1  # only the leader's
    assert cache.stats.coalesced == 199
    assert len({id(answer) for answer in answers}) == 200  # each caller has its own


async def test_without_coalescing_every_call_goes_out(serve: Serve) -> None:
    app = Counting(delay=0.1)
    cache = ResponseCache(MemoryBackend(), CachePolicy(coalesce=False))
    async with AsyncClient(await serve(app.app), cache=cache) as client:
        await asyncio.gather(*(client.get("/slow") for _ in range(20)))
    assert app.received == 20


async def test_a_stampede_on_redis_sends_one_request(
    serve: Serve, redis_server: ServerProcess, namespace: str
) -> None:
    app = Counting()
    backend: CacheBackend = RedisBackend(f"redis://127.0.0.1:{redis_server.port}/0")
    cache = ResponseCache(backend, namespace=namespace)
    async with cache, AsyncClient(await serve(app.app), cache=cache) as client:
        answers = await asyncio.gather(*(client.get("/slow") for _ in range(200)))
        after = await client.get("/slow")
    assert app.received == 1
    assert all(answer.status_code == 200 for answer in answers)
    assert after.cache_status is CacheStatus.HIT


async def test_different_calls_do_not_share(serve: Serve) -> None:
    app = Counting(delay=0.1)
    async with AsyncClient(await serve(app.app), cache=ResponseCache()) as client:
        await asyncio.gather(
            client.get("/slow"),
            client.get("/slow", params={"q": 1}),
            client.get("/slow", headers={"Accept": "text/plain"}),
        )
    assert app.received == 3


async def test_coalescing_works_for_uncacheable_answers_too(serve: Serve) -> None:
    app = Counting(headers={"Cache-Control": "no-store"})
    cache = ResponseCache()
    async with AsyncClient(await serve(app.app), cache=cache) as client:
        await asyncio.gather(*(client.get("/slow") for _ in range(50)))
        await client.get("/slow")
    assert app.received == 2  # one for the 50 at once, one after: nothing was stored


async def test_the_leaders_failure_is_shared(serve: Serve) -> None:
    app = Counting(delay=0.1)
    async with AsyncClient(await serve(app.app), cache=ResponseCache()) as client:
        outcomes = await asyncio.gather(
            *(client.get("/fail") for _ in range(10)), return_exceptions=True
        )
    assert app.received == 1
    assert all(isinstance(outcome, ReadError) for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 10  # each caller has its own copy
    assert all(outcome.request is not None for outcome in outcomes)  # type: ignore[union-attr]


async def test_a_cancelled_leader_hands_over_to_a_follower(serve: Serve) -> None:
    app = Counting(delay=0.3)
    async with AsyncClient(await serve(app.app), cache=ResponseCache()) as client:
        leader = asyncio.create_task(client.get("/slow"))
        await asyncio.wait_for(app.arrived.wait(), timeout=10)
        followers = [asyncio.create_task(client.get("/slow")) for _ in range(5)]
        await asyncio.sleep(0.01)
        leader.cancel()
        answers = await asyncio.gather(*followers)
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert app.received == 2  # the cancelled leader's, and one for the followers
    statuses = sorted(answer.cache_status for answer in answers)
    assert statuses.count(CacheStatus.MISS) == 1
    assert statuses.count(CacheStatus.COALESCED) == 4


async def test_a_follower_waits_no_longer_than_its_own_deadline(serve: Serve) -> None:
    app = Counting(delay=0.5)
    async with AsyncClient(await serve(app.app), cache=ResponseCache()) as client:
        leader = asyncio.create_task(client.get("/slow", timeout=10))
        await asyncio.wait_for(app.arrived.wait(), timeout=10)
        with pytest.raises(DeadlineExceeded, match="identical call in flight"):
            await client.get("/slow", timeout=0.05)
        assert (await leader).status_code == 200
    assert app.received == 1


async def test_a_leaders_deadline_is_not_its_followers(serve: Serve) -> None:
    app = Counting(delay=0.3)
    async with AsyncClient(await serve(app.app), cache=ResponseCache()) as client:
        hasty = asyncio.create_task(client.get("/slow", timeout=0.1))
        await asyncio.wait_for(app.arrived.wait(), timeout=10)
        patient = asyncio.create_task(client.get("/slow", timeout=10))
        with pytest.raises(DeadlineExceeded):
            await hasty
        answer = await patient
    assert answer.status_code == 200
    assert app.received == 2


class Personal:
    """``/slow?token=...`` answers slowly, cacheable, with a session cookie minted for the caller;
    ``/download/1?token=...`` redirects to ``/files/1`` with the same token."""

    def __init__(self) -> None:
        self.received = 0
        self.app = web.Application()
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/download/1", self.download)
        self.app.router.add_get("/files/1", self.file)

    async def slow(self, request: web.Request) -> web.Response:
        self.received += 1
        await asyncio.sleep(0.2)
        headers = {
            "Cache-Control": "max-age=60",
            "Set-Cookie": f"session=for-{request.query['token']}",
        }
        return web.json_response({"n": self.received}, headers=headers)

    async def download(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/files/1?token={request.query['token']}")

    async def file(self, request: web.Request) -> web.Response:
        self.received += 1
        return web.Response(body=b"file", headers={"Cache-Control": "max-age=60"})


TOKEN_IGNORED = CachePolicy(ignore_params=frozenset({"token"}))


async def test_a_follower_gets_its_own_url_and_none_of_the_leaders_cookies(serve: Serve) -> None:
    """Calls that differ in an ignored token share one flight: never the leader's token or cookie."""
    app = Personal()
    cache = ResponseCache(MemoryBackend(), TOKEN_IGNORED)
    async with cache, AsyncClient(await serve(app.app), cache=cache) as client:
        alice, bob = await asyncio.gather(
            client.get("/slow", params={"token": "alice-secret"}),
            client.get("/slow", params={"token": "bob-secret"}),
        )
    assert app.received == 1
    assert (alice.cache_status, bob.cache_status) == (CacheStatus.MISS, CacheStatus.COALESCED)
    assert alice.headers["Set-Cookie"] == "session=for-alice-secret"
    assert "Set-Cookie" not in bob.headers
    assert bob.url.query["token"] == "bob-secret"
    assert "alice" not in str(bob.url) + str(bob.headers)


async def test_a_redirects_target_is_stored_without_the_ignored_parameter(serve: Serve) -> None:
    app = Personal()
    cache = ResponseCache(MemoryBackend(), TOKEN_IGNORED)
    async with cache, AsyncClient(await serve(app.app), cache=cache) as client:
        alice = await client.get("/download/1", params={"token": "ALICE"})
        bob = await client.get("/download/1", params={"token": "BOB"})
    assert (alice.cache_status, bob.cache_status) == (CacheStatus.MISS, CacheStatus.HIT)
    assert alice.url.query["token"] == "ALICE"  # the caller's own redirect, as it came
    assert "ALICE" not in str(bob.url)
    assert bob.url.path == "/files/1"
