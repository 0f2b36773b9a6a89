"""What hishel and requests-cache offer that the cache now does too: stale-while-revalidate,
a response's own stale-if-error, only-if-cached and max-stale, keys without chosen query
parameters, expiry by URL pattern, and reading a stored entry back."""

from __future__ import annotations

import asyncio

import pytest

from microcall._request import Request
from microcall._response import CacheStatus
from microcall.cache import CachePolicy, DiskBackend, RedisBackend
from microcall.errors import ConfigurationError
from microcall.testing import Reply

from .conftest import ServerProcess
from .helpers import Service, make_client


async def _settle(condition: object, rounds: int = 200) -> None:
    """Give background tasks turns of the loop until ``condition()`` holds."""
    for _ in range(rounds):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("the background refresh did not happen")


def counting(control: str) -> Service:
    def reply(request: Request) -> Reply:
        return Reply(200, content=f"v{service.count}".encode(), headers={"Cache-Control": control})

    service = Service(reply)
    return service


async def test_stale_while_revalidate_serves_stale_and_refreshes_once() -> None:
    service = counting("max-age=10, stale-while-revalidate=30")
    client, cache, clock = make_client(service)
    async with client:
        assert (await client.get("/a")).content == b"v1"
        clock.advance(15)  # stale, inside the window
        answers = await asyncio.gather(*(client.get("/a", params={"n": 1}) for _ in range(1)))
        stale = [await client.get("/a") for _ in range(10)]
        await _settle(lambda: service.count == 3 and not cache._refreshes)
        refreshed = await client.get("/a")
    assert answers[0].cache_status is CacheStatus.MISS  # another URL
    assert {answer.cache_status for answer in stale} == {CacheStatus.STALE}
    assert {answer.content for answer in stale} == {b"v1"}
    assert service.count == 2 + 1  # the first, the other URL, one refresh for ten stale answers
    assert refreshed.cache_status is CacheStatus.HIT
    assert refreshed.content == b"v3"


async def test_past_the_window_the_call_waits_for_the_service() -> None:
    service = counting("max-age=10, stale-while-revalidate=30")
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(41)
        answer = await client.get("/a")
    assert answer.cache_status is CacheStatus.MISS
    assert answer.content == b"v2"


async def test_a_request_wanting_fresh_is_not_given_stale_while_revalidating() -> None:
    service = counting("max-age=10, stale-while-revalidate=30")
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(15)
        answer = await client.get("/a", headers={"Cache-Control": "max-age=20"})
    assert answer.cache_status is CacheStatus.MISS


async def test_a_responses_own_stale_if_error_counts_without_a_policy() -> None:
    service = Service(
        Reply(200, content=b"good", headers={"Cache-Control": "max-age=10, stale-if-error=60"})
    )
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        service.reply = Reply(503)
        clock.advance(30)
        stale = await client.get("/a")
        clock.advance(60)
        failed = await client.get("/a")
    assert stale.cache_status is CacheStatus.STALE
    assert stale.content == b"good"
    assert failed.status_code == 503


async def test_a_policy_of_zero_still_forbids_stale_if_error() -> None:
    service = Service(Reply(200, headers={"Cache-Control": "max-age=10, stale-if-error=60"}))
    client, _, clock = make_client(service, policy=CachePolicy(stale_if_error=0))
    async with client:
        await client.get("/a")
        service.reply = Reply(503)
        clock.advance(30)
        answer = await client.get("/a")
    assert answer.status_code == 503


async def test_only_if_cached_answers_504_without_sending() -> None:
    service = Service(Reply(200, content=b"x", headers={"Cache-Control": "max-age=10"}))
    client, _, clock = make_client(service)
    only = {"Cache-Control": "only-if-cached"}
    async with client:
        absent = await client.get("/a", headers=only)
        await client.get("/a")
        present = await client.get("/a", headers=only)
        clock.advance(20)
        expired = await client.get("/a", headers=only)
    assert (absent.status_code, absent.content) == (504, b"")
    assert present.status_code == 200
    assert expired.status_code == 504
    assert service.count == 1


async def test_max_stale_accepts_a_stale_entry_unchecked() -> None:
    # An ETag: the entry is kept past its freshness (keep_stale), so max-stale can reach it.
    headers = {"Cache-Control": "max-age=10", "ETag": '"1"'}
    service = Service(Reply(200, content=b"x", headers=headers))
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(25)
        within = await client.get("/a", headers={"Cache-Control": "max-stale=20"})
        beyond = await client.get("/a", headers={"Cache-Control": "max-stale=5"})
        clock.advance(100)
        any_age = await client.get("/a", headers={"Cache-Control": "max-stale, only-if-cached"})
    assert within.cache_status is CacheStatus.STALE
    assert beyond.cache_status is CacheStatus.MISS
    assert any_age.status_code == 200
    assert any_age.cache_status is CacheStatus.STALE
    assert service.count == 2  # the first call, and the one max-stale=5 did not accept


async def test_ignored_query_parameters_share_one_entry_and_are_not_stored() -> None:
    service = Service(Reply(200, content=b"x", headers={"Cache-Control": "max-age=60"}))
    policy = CachePolicy(ignore_params=frozenset({"token"}))
    client, cache, _ = make_client(service, policy=policy)
    async with client:
        first = await client.get("/a", params={"id": 1, "token": "secret-1"})
        second = await client.get("/a", params={"id": 1, "token": "secret-2"})
        other = await client.get("/a", params={"id": 2, "token": "secret-1"})
        entry = await cache.get_entry("http://svc:8080/a?id=1&token=whatever")
    assert (first.cache_status, second.cache_status) == (CacheStatus.MISS, CacheStatus.HIT)
    assert str(second.url) == "http://svc:8080/a?id=1&token=secret-2"  # the caller's own
    assert other.cache_status is CacheStatus.MISS
    assert entry is not None
    assert "secret" not in entry.url + entry.final_url


async def test_ttl_by_url_pattern() -> None:
    service = Service(Reply(200, content=b"x"))  # no caching headers at all
    policy = CachePolicy(ttl_by_url={"*/prices/*": 5, "http://svc:8080/books/*": 600})
    client, _, clock = make_client(service, policy=policy)
    async with client:
        for path in ("/prices/1", "/books/1", "/other"):
            await client.get(path)
        clock.advance(10)
        answers = {path: await client.get(path) for path in ("/prices/1", "/books/1", "/other")}
    assert answers["/prices/1"].cache_status is CacheStatus.MISS
    assert answers["/books/1"].cache_status is CacheStatus.HIT
    assert answers["/other"].cache_status is CacheStatus.MISS


def test_policy_options_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        CachePolicy(ttl_by_url={"*": -1})
    with pytest.raises(ConfigurationError):
        CachePolicy(ignore_params="token")  # type: ignore[arg-type]
    assert hash(CachePolicy(ttl_by_url={"*": 1})) == hash(CachePolicy(ttl_by_url={"*": 1}))


@pytest.mark.parametrize("kind", ["memory", "disk", "redis"])
async def test_get_entry_and_invalidate_on_every_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: object, namespace: str
) -> None:
    backend = None
    if kind == "disk":
        backend = DiskBackend(str(tmp_path))
    elif kind == "redis":
        server: ServerProcess = request.getfixturevalue("redis_server")
        backend = RedisBackend(f"redis://127.0.0.1:{server.port}/0")
    service = Service(Reply(200, content=b"body", headers={"Cache-Control": "max-age=60"}))
    client, cache, clock = make_client(service, backend=backend, namespace=namespace)
    async with cache, client:
        assert await cache.get_entry("http://svc:8080/a") is None
        await client.get("/a")
        entry = await cache.get_entry("http://svc:8080/a")
        await cache.invalidate("http://svc:8080/a")
        gone = await cache.get_entry("http://svc:8080/a")
    assert entry is not None
    assert (entry.status, entry.body) == (200, b"body")
    assert entry.fresh_until - clock.now() == pytest.approx(60, abs=1)
    assert gone is None
