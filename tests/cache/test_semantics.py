"""HTTP caching semantics (RFC 9111) through a client, on a fake clock: freshness,
revalidation, Vary, no-store, shared and private caches, invalidation, stale-if-error."""

from __future__ import annotations

import logging

import pytest

from microcall import ConnectError, retry
from microcall._request import Request
from microcall._response import CacheStatus
from microcall.cache import CacheEvent, CachePolicy
from microcall.policy.backoff import Backoff
from microcall.testing import Reply

from .helpers import EPOCH, Service, http_date, make_client

HIT, MISS = CacheStatus.HIT, CacheStatus.MISS
REVALIDATED, STALE = CacheStatus.REVALIDATED, CacheStatus.STALE


def counting(headers: dict[str, str] | None = None, status: int = 200) -> Service:
    """A service answering ``{"n": <how many requests so far>}`` with these headers."""
    service: Service

    def reply(request: Request) -> Reply:
        return Reply(status, json={"n": service.count}, headers=headers or {})

    service = Service(reply)
    return service


# ---------------------------------------------------------------- freshness


async def test_max_age_answers_from_the_cache_until_it_runs_out() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _cache, clock = make_client(service)
    async with client:
        first = await client.get("/books")
        clock.advance(59)
        second = await client.get("/books")
        clock.advance(1)
        third = await client.get("/books")
    assert (first.cache_status, second.cache_status, third.cache_status) == (MISS, HIT, MISS)
    assert second.json() == first.json() == {"n": 1}
    assert third.json() == {"n": 2}
    assert service.count == 2
    assert second.from_cache
    assert not first.from_cache


async def test_a_hit_is_not_an_attempt_and_says_its_age() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/books")
        clock.advance(12.5)
        hit = await client.get("/books")
    assert hit.attempts == ()
    assert hit.elapsed == 0.0
    assert hit.headers["Age"] == "12"
    assert hit.status_code == 200
    assert hit.request.method == "GET"


async def test_date_and_age_shorten_freshness() -> None:
    service = counting({"Cache-Control": "max-age=60", "Date": http_date(EPOCH - 30)})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(29)
        assert (await client.get("/a")).cache_status is HIT
        clock.advance(1)
        assert (await client.get("/a")).cache_status is MISS
    service = counting({"Cache-Control": "max-age=60", "Age": "50"})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(9)
        assert (await client.get("/a")).cache_status is HIT
        clock.advance(1)
        assert (await client.get("/a")).cache_status is MISS


async def test_expires_counts_from_date() -> None:
    service = counting({"Date": http_date(EPOCH), "Expires": http_date(EPOCH + 20)})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(19)
        assert (await client.get("/a")).cache_status is HIT
        clock.advance(1)
        assert (await client.get("/a")).cache_status is MISS


async def test_max_age_wins_over_expires() -> None:
    service = counting({"Cache-Control": "max-age=5", "Expires": http_date(EPOCH + 500)})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(6)
        assert (await client.get("/a")).cache_status is MISS


async def test_an_invalid_expires_is_already_stale() -> None:
    service = counting({"Expires": "0"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is MISS
    assert service.count == 2


async def test_no_caching_headers_and_no_default_ttl_is_not_cached() -> None:
    service = counting()
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        await client.get("/a")
    assert service.count == 2
    assert cache.stats.stored == 0


async def test_default_ttl_covers_services_that_send_no_caching_headers() -> None:
    service = counting()
    client, _, clock = make_client(service, policy=CachePolicy(default_ttl=30))
    async with client:
        await client.get("/a")
        clock.advance(29)
        assert (await client.get("/a")).cache_status is HIT
        clock.advance(1)
        assert (await client.get("/a")).cache_status is MISS


async def test_default_ttl_does_not_override_the_services_own_freshness() -> None:
    service = counting({"Cache-Control": "max-age=5"})
    client, _, clock = make_client(service, policy=CachePolicy(default_ttl=300))
    async with client:
        await client.get("/a")
        clock.advance(6)
        assert (await client.get("/a")).cache_status is MISS


async def test_default_ttl_leaves_a_404_alone_unless_the_service_says_so() -> None:
    service = counting(status=404)
    client, _, _ = make_client(service, policy=CachePolicy(default_ttl=30))
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is MISS
    service = counting({"Cache-Control": "max-age=30"}, status=404)
    client, _, _ = make_client(service, policy=CachePolicy(default_ttl=30))
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is HIT


async def test_ttl_overrides_freshness_headers_but_not_no_store() -> None:
    service = counting({"Cache-Control": "no-cache, max-age=0"})
    client, _, clock = make_client(service, policy=CachePolicy(ttl=10))
    async with client:
        await client.get("/a")
        clock.advance(9)
        assert (await client.get("/a")).cache_status is HIT
    service = counting({"Cache-Control": "no-store"})
    client, _, _ = make_client(service, policy=CachePolicy(ttl=10))
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is MISS


async def test_server_errors_are_never_stored() -> None:
    service = counting({"Cache-Control": "max-age=60"}, status=503)
    client, cache, _ = make_client(service, policy=CachePolicy(ttl=60))
    async with client:
        await client.get("/a")
        await client.get("/a")
    assert service.count == 2
    assert cache.stats.stored == 0


# ---------------------------------------------------------------- no-store, requests' directives


async def test_no_store_is_never_stored() -> None:
    service = counting({"Cache-Control": "no-store, max-age=60"})
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        await client.get("/a")
    assert service.count == 2
    assert cache.stats.stored == 0


async def test_a_request_with_no_store_is_not_stored() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a", headers={"Cache-Control": "no-store"})
        assert (await client.get("/a")).cache_status is MISS


async def test_a_request_with_no_cache_or_max_age_zero_goes_to_the_service() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a")
        assert (await client.get("/a", headers={"Cache-Control": "no-cache"})).cache_status is MISS
        assert (await client.get("/a", headers={"Cache-Control": "max-age=0"})).cache_status is MISS
        assert (await client.get("/a", headers={"Pragma": "no-cache"})).cache_status is MISS
        # The refreshed entry answers the next plain call.
        assert (await client.get("/a")).json() == {"n": 4}


async def test_min_fresh_wants_an_entry_fresh_for_that_much_longer() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(50)
        fresh = await client.get("/a", headers={"Cache-Control": "min-fresh=5"})
        assert fresh.cache_status is HIT
        stale = await client.get("/a", headers={"Cache-Control": "min-fresh=20"})
        assert stale.cache_status is MISS


async def test_a_request_with_a_body_or_its_own_conditions_bypasses_the_cache() -> None:
    service = counting({"Cache-Control": "max-age=60", "ETag": '"v1"'})
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        mine = await client.get("/a", headers={"If-None-Match": '"v0"'})
        ranged = await client.get("/a", headers={"Range": "bytes=0-1"})
        with_body = await client.request("GET", "/a", content=b"query")
    assert mine.cache_status is ranged.cache_status is with_body.cache_status is None
    assert service.count == 4
    assert cache.stats.misses == 1


async def test_per_call_false_neither_reads_nor_stores() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        bypassed = await client.get("/a", cache=False)
        await client.get("/b", cache=False)
        assert (await client.get("/b")).cache_status is MISS
    assert bypassed.cache_status is None
    assert cache.stats.stored == 2


async def test_a_per_call_policy_replaces_the_caches_own() -> None:
    service = counting()
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a", cache=CachePolicy(ttl=5))
        clock.advance(4)
        assert (await client.get("/a", cache=CachePolicy(ttl=5))).cache_status is HIT
        # The stored entry's freshness is what it was stored with.
        assert (await client.get("/a")).cache_status is HIT


async def test_bodies_over_max_body_are_not_stored() -> None:
    service = Service(Reply(200, content=b"x" * 2000, headers={"Cache-Control": "max-age=60"}))
    client, _, _ = make_client(service, policy=CachePolicy(max_body=1000))
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is MISS


async def test_set_cookie_and_connection_fields_are_not_stored() -> None:
    headers = {"Cache-Control": "max-age=60", "Set-Cookie": "session=1", "X-Kept": "yes"}
    client, _, _ = make_client(Service(Reply(200, headers=headers)))
    async with client:
        await client.get("/a")
        hit = await client.get("/a")
    assert hit.cache_status is HIT
    assert "Set-Cookie" not in hit.headers
    assert hit.headers["X-Kept"] == "yes"


async def test_a_response_with_a_field_that_cannot_be_stored_is_not() -> None:
    headers = {"Cache-Control": "max-age=60", "X-Odd": "a\x00b"}
    client, cache, _ = make_client(Service(Reply(200, headers=headers)))
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is MISS
    assert cache.stats.backend_errors == 0


async def test_head_is_cached_apart_from_get() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a")
        head = await client.head("/a")
        head_again = await client.head("/a")
    assert head.cache_status is MISS
    assert head_again.cache_status is HIT
    assert head_again.content == b""


async def test_the_query_is_part_of_the_key() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a", params={"page": 1})
        assert (await client.get("/a", params={"page": 2})).cache_status is MISS
        assert (await client.get("/a?page=1")).cache_status is HIT


# ---------------------------------------------------------------- revalidation


def validating(etag: str = '"v1"', max_age: int = 10) -> Service:
    """A service with an ETag that answers a matching If-None-Match with 304."""
    service: Service

    def reply(request: Request) -> Reply:
        if request.headers.get("If-None-Match") == etag:
            return Reply(
                304, headers={"ETag": etag, "Cache-Control": f"max-age={max_age}", "X-New": "1"}
            )
        return Reply(
            200,
            json={"n": service.count},
            headers={"ETag": etag, "Cache-Control": f"max-age={max_age}", "Content-Length": "8"},
        )

    service = Service(reply)
    return service


async def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it() -> None:
    service = validating()
    client, cache, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(11)
        revalidated = await client.get("/a")
        sent = service.last_headers()
        clock.advance(9)
        hit = await client.get("/a")
    assert sent["If-None-Match"] == '"v1"'
    assert revalidated.cache_status is REVALIDATED
    assert revalidated.from_cache
    assert revalidated.status_code == 200
    assert revalidated.json() == {"n": 1}  # the stored body
    assert [attempt.status for attempt in revalidated.attempts] == [304]
    assert revalidated.headers["X-New"] == "1"  # the 304's fields update the entry
    assert revalidated.headers["Content-Length"] == "8"  # but never the body's length
    assert hit.cache_status is HIT  # fresh again for the 304's max-age
    assert service.count == 2
    assert cache.stats.revalidated == 1


async def test_no_cache_responses_are_revalidated_every_time() -> None:
    service = validating()
    service_reply = service.reply

    def no_cache(request: Request) -> Reply:
        reply = service_reply(request)  # type: ignore[operator]
        return Reply(
            reply.status, json=reply.json, headers={"ETag": '"v1"', "Cache-Control": "no-cache"}
        )

    service.reply = no_cache
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a")
        statuses = [(await client.get("/a")).cache_status for _ in range(3)]
    assert statuses == [REVALIDATED] * 3
    assert service.count == 4


async def test_last_modified_is_sent_as_if_modified_since() -> None:
    modified = http_date(EPOCH - 3600)

    def reply(request: Request) -> Reply:
        if request.headers.get("If-Modified-Since") == modified:
            return Reply(304)
        return Reply(
            200, content=b"body", headers={"Last-Modified": modified, "Cache-Control": "max-age=1"}
        )

    service = Service(reply)
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(2)
        answer = await client.get("/a")
    assert answer.cache_status is REVALIDATED
    assert answer.content == b"body"


async def test_a_changed_resource_replaces_the_entry() -> None:
    etag = ['"v1"']

    def reply(request: Request) -> Reply:
        if request.headers.get("If-None-Match") == etag[0]:
            return Reply(304, headers={"ETag": etag[0]})
        return Reply(
            200, content=etag[0].encode(), headers={"ETag": etag[0], "Cache-Control": "max-age=10"}
        )

    service = Service(reply)
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(11)
        etag[0] = '"v2"'
        changed = await client.get("/a")
        again = await client.get("/a")
    assert changed.cache_status is MISS
    assert changed.content == b'"v2"'
    assert again.cache_status is HIT
    assert again.content == b'"v2"'


async def test_a_304_for_another_representation_fetches_the_whole_response() -> None:
    def reply(request: Request) -> Reply:
        if "If-None-Match" in request.headers:
            return Reply(304, headers={"ETag": '"other"'})
        return Reply(200, content=b"full", headers={"ETag": '"v1"', "Cache-Control": "max-age=10"})

    service = Service(reply)
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(11)
        answer = await client.get("/a")
    assert answer.status_code == 200
    assert answer.content == b"full"
    assert "If-None-Match" not in service.last_headers()
    assert service.count == 3


async def test_an_entry_with_a_validator_is_kept_past_freshness_for_keep_stale() -> None:
    service = validating(max_age=10)
    client, _, clock = make_client(service, policy=CachePolicy(keep_stale=60))
    async with client:
        await client.get("/a")
        clock.advance(10 + 61)  # the memory backend, on the same clock, has dropped it
        answer = await client.get("/a")
    assert answer.cache_status is MISS
    assert "If-None-Match" not in service.last_headers()


# ---------------------------------------------------------------- Vary


async def test_vary_keeps_one_entry_per_value_of_the_named_headers() -> None:
    def reply(request: Request) -> Reply:
        accept = request.headers.get("Accept", "none")
        return Reply(
            200, content=accept.encode(), headers={"Vary": "Accept", "Cache-Control": "max-age=60"}
        )

    service = Service(reply)
    client, _, _ = make_client(service)
    async with client:
        a1 = await client.get("/a", headers={"Accept": "text/a"})
        b1 = await client.get("/a", headers={"Accept": "text/b"})
        a2 = await client.get("/a", headers={"accept": "text/a"})  # the older variant
        b2 = await client.get("/a", headers={"Accept": "text/b"})  # the latest one
        none = await client.get("/a")
    assert [r.cache_status for r in (a1, b1, a2, b2, none)] == [MISS, MISS, HIT, HIT, MISS]
    assert (a2.content, b2.content, none.content) == (b"text/a", b"text/b", b"none")
    assert service.count == 3


async def test_a_varyd_credential_is_kept_as_a_digest_never_in_clear() -> None:
    """An entry sits in Redis or memcached, read by whoever can read them."""
    service = counting({"Vary": "Authorization, X-Api-Key", "Cache-Control": "public, max-age=60"})
    client, cache, _ = make_client(service)
    secret = {"Authorization": "Bearer s3cret-token", "X-Api-Key": "s3cret-key"}
    async with client:
        first = await client.get("/a", headers=secret)
        again = await client.get("/a", headers=secret)
        other = await client.get("/a", headers={**secret, "X-Api-Key": "another"})
        entry = await cache.get_entry("http://svc:8080/a", headers=secret)
    assert [r.cache_status for r in (first, again, other)] == [MISS, HIT, MISS]
    assert entry is not None
    assert "s3cret" not in repr(entry)
    assert [name for name, _ in entry.vary] == ["authorization", "x-api-key"]


async def test_vary_star_is_not_stored() -> None:
    service = counting({"Vary": "*", "Cache-Control": "max-age=60"})
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        await client.get("/a")
    assert service.count == 2
    assert cache.stats.stored == 0


async def test_an_invalidation_makes_older_variants_unreachable() -> None:
    def reply(request: Request) -> Reply:
        if request.method == "POST":
            return Reply(204)
        accept = request.headers.get("Accept", "")
        body = f"{accept}:{service.count}".encode()
        return Reply(200, content=body, headers={"Vary": "Accept", "Cache-Control": "max-age=60"})

    service = Service(reply)
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a", headers={"Accept": "x"})
        await client.get("/a", headers={"Accept": "y"})
        await client.post("/a")
        await client.get("/a", headers={"Accept": "y"})
        after = await client.get("/a", headers={"Accept": "x"})
    assert after.cache_status is MISS
    assert after.content == b"x:5"


# ---------------------------------------------------------------- shared and private


async def test_a_shared_cache_does_not_store_private_responses() -> None:
    service = counting({"Cache-Control": "private, max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a")
        assert (await client.get("/a")).cache_status is MISS


async def test_a_private_cache_stores_them_apart_for_each_caller() -> None:
    service = counting({"Cache-Control": "private, max-age=60"})
    client, _, _ = make_client(service, policy=CachePolicy(shared=False))
    async with client:
        alice = {"Authorization": "Bearer alice"}
        await client.get("/a", headers=alice)
        assert (await client.get("/a", headers=alice)).cache_status is HIT
        bob = await client.get("/a", headers={"Authorization": "Bearer bob"})
        assert bob.cache_status is MISS
        assert bob.json() == {"n": 2}


async def test_a_shared_cache_stores_authorized_answers_only_when_allowed() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        token = {"Authorization": "Bearer t"}
        await client.get("/a", headers=token)
        assert (await client.get("/a", headers=token)).cache_status is MISS
    service = counting({"Cache-Control": "public, max-age=60"})
    client, _, _ = make_client(service)
    async with client:
        await client.get("/a", headers={"Authorization": "Bearer t"})
        assert (await client.get("/a", headers={"Authorization": "Bearer u"})).cache_status is HIT


async def test_s_maxage_counts_in_a_shared_cache_only() -> None:
    headers = {"Cache-Control": "max-age=5, s-maxage=50"}
    client, _, clock = make_client(counting(headers))
    async with client:
        await client.get("/a")
        clock.advance(20)
        assert (await client.get("/a")).cache_status is HIT
    client, _, clock = make_client(counting(headers), policy=CachePolicy(shared=False))
    async with client:
        await client.get("/a")
        clock.advance(20)
        assert (await client.get("/a")).cache_status is MISS


# ---------------------------------------------------------------- invalidation


async def test_a_successful_unsafe_call_drops_the_urls_entries() -> None:
    def reply(request: Request) -> Reply:
        if request.method != "GET":
            return Reply(200 if request.method != "DELETE" else 500)
        return Reply(200, json={"n": service.count}, headers={"Cache-Control": "max-age=60"})

    service = Service(reply)
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        await client.delete("/a")  # failed: nothing changed, nothing dropped
        assert (await client.get("/a")).cache_status is HIT
        await client.put("/a", json={"x": 1})
        assert (await client.get("/a")).cache_status is MISS
    assert cache.stats.invalidated == 1


async def test_location_of_the_same_origin_is_invalidated_too() -> None:
    def reply(request: Request) -> Reply:
        if request.method == "POST":
            return Reply(
                201, headers={"Location": "/books/7", "Content-Location": "http://other:1/books/8"}
            )
        return Reply(200, headers={"Cache-Control": "max-age=60"})

    service = Service(reply)
    client, _, _ = make_client(service)
    async with client:
        await client.get("/books/7")
        await client.post("/books", json={})
        assert (await client.get("/books/7")).cache_status is MISS


async def test_invalidate_by_hand() -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, cache, _ = make_client(service)
    async with client:
        await client.get("/a")
        await cache.invalidate("http://svc:8080/a")
        assert (await client.get("/a")).cache_status is MISS


# ---------------------------------------------------------------- stale-if-error


def flaky(headers: dict[str, str]) -> tuple[Service, list[Reply | None]]:
    """A service that answers 200 until ``failure[0]`` is set to the reply to give instead."""
    failure: list[Reply | None] = [None]
    service: Service

    def reply(request: Request) -> Reply:
        if failure[0] is not None:
            return failure[0]
        return Reply(200, json={"n": service.count}, headers=headers)

    service = Service(reply)
    return service, failure


async def test_a_stale_entry_stands_in_for_a_failing_service_within_the_bound() -> None:
    service, failure = flaky({"Cache-Control": "max-age=10"})
    client, cache, clock = make_client(service, policy=CachePolicy(stale_if_error=60))
    async with client:
        await client.get("/a")
        failure[0] = Reply(error=ConnectError)
        clock.advance(10 + 59)
        stale = await client.get("/a")
        failure[0] = Reply(503)
        stale_503 = await client.get("/a")
        clock.advance(2)
        failure[0] = Reply(error=ConnectError)
        with pytest.raises(ConnectError):
            await client.get("/a")
    assert stale.cache_status is STALE
    assert stale.from_cache
    assert stale.json() == {"n": 1}
    assert [attempt.error for attempt in stale.attempts] == [
        "ConnectError: scripted ConnectError from svc:8080"
    ]
    assert stale_503.cache_status is STALE
    assert [attempt.status for attempt in stale_503.attempts] == [503]
    assert cache.stats.stale == 2


async def test_without_a_bound_a_failure_is_the_answer() -> None:
    service, failure = flaky({"Cache-Control": "max-age=10"})
    client, _, clock = make_client(service)
    async with client:
        await client.get("/a")
        clock.advance(11)
        failure[0] = Reply(503)
        answer = await client.get("/a")
    assert answer.status_code == 503
    assert answer.cache_status is MISS


async def test_the_responses_own_stale_if_error_narrows_the_bound() -> None:
    service, failure = flaky({"Cache-Control": "max-age=10, stale-if-error=5"})
    client, _, clock = make_client(service, policy=CachePolicy(stale_if_error=60))
    async with client:
        await client.get("/a")
        failure[0] = Reply(503)
        clock.advance(16)
        assert (await client.get("/a")).status_code == 503


async def test_must_revalidate_forbids_serving_stale() -> None:
    service, failure = flaky({"Cache-Control": "max-age=10, must-revalidate"})
    client, _, clock = make_client(service, policy=CachePolicy(stale_if_error=60))
    async with client:
        await client.get("/a")
        failure[0] = Reply(503)
        clock.advance(11)
        assert (await client.get("/a")).status_code == 503


async def test_stale_if_error_after_the_retries_are_spent() -> None:
    service, failure = flaky({"Cache-Control": "max-age=10"})
    client, _, clock = make_client(
        service,
        policy=CachePolicy(stale_if_error=60),
        strategy=retry(3, backoff=Backoff(base=0.0)),
    )
    async with client:
        await client.get("/a")
        clock.advance(11)
        failure[0] = Reply(503)
        stale = await client.get("/a")
    assert stale.cache_status is STALE
    assert [attempt.status for attempt in stale.attempts] == [503, 503, 503]


# ---------------------------------------------------------------- counting


async def test_events_tell_listeners_how_each_call_was_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = counting({"Cache-Control": "max-age=60"})
    client, cache, _ = make_client(service)
    seen: list[CacheEvent] = []

    def broken(event: CacheEvent) -> None:
        raise RuntimeError("listener bug")

    cache.events.extend([seen.append, broken])
    with caplog.at_level(logging.ERROR, logger="microcall.cache"):
        async with client:
            await client.get("/a", route="GET /a")
            await client.get("/a", route="GET /a")
    assert seen == [CacheEvent(MISS, "GET", "GET /a"), CacheEvent(HIT, "GET", "GET /a")]
    assert "listener bug" in caplog.text
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stored) == (1, 1, 1)
