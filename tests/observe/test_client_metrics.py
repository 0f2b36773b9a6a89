"""ClientMetrics against real servers on 127.0.0.1: calls, attempts, refusals, breakers, ejections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

import microcall
from microcall.errors import CircuitOpen, ConfigurationError, ConnectError, UsageError
from microcall.observe.prometheus import ClientMetrics
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudgetConfig
from microcall.policy.ejection import OutlierEjectionConfig
from tests.conftest import Serve
from tests.observe._metrics import label_values, value

QUICK = microcall.Backoff(base=0.001, cap=0.002)
CALLS = "http_client_request_duration_seconds_count"
ATTEMPTS = "microcall_client_attempts_total"
ATTEMPT_TIMES = "microcall_client_attempt_duration_seconds_count"
REFUSED = "microcall_client_attempts_refused_total"


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1].rstrip("/")


def on(url: str, method: str = "GET") -> dict[str, str]:
    return {
        "http_request_method": method,
        "server_address": "127.0.0.1",
        "server_port": port_of(url),
    }


async def books_app(serve: Serve) -> str:
    async def book(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info.get("id", "new")})

    app = web.Application()
    app.router.add_get("/books/{id}", book)
    app.router.add_post("/books", book)
    return await serve(app)


async def failing_then_ok(serve: Serve, failures: int) -> str:
    """Each path answers 503 ``failures`` times, then 200."""
    seen: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        count = seen[request.path] = seen.get(request.path, 0) + 1
        return web.Response(status=503 if count <= failures else 200)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return await serve(app)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_call_and_its_attempt_are_counted_with_opentelemetry_labels(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await books_app(serve)
    metrics = ClientMetrics(registry)
    async with microcall.AsyncClient(base, observers=[metrics]) as client:
        await client.get("/books/1")
        await client.get("/books/2", params={"token": "x"})
        await client.post("/books", json={"title": "t"}, idempotent=True)
        await client.get("/nowhere")

    ok = {"http_response_status_code": "200", "error_type": ""}
    assert value(registry, CALLS, **on(base), **ok) == 2
    assert value(registry, CALLS, **on(base, "POST"), **ok) == 1
    assert (
        value(registry, CALLS, **on(base), http_response_status_code="404", error_type="404") == 1
    )
    assert value(registry, ATTEMPTS, **on(base), attempt_kind="first") == 3
    assert value(registry, ATTEMPT_TIMES, **on(base), attempt_kind="first", **ok) == 2
    assert value(registry, "http_client_active_requests", **on(base)) == 0


async def test_retries_are_attempts_of_their_own_kind(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await failing_then_ok(serve, failures=2)
    metrics = ClientMetrics(registry)
    async with microcall.AsyncClient(
        base, observers=[metrics], strategy=microcall.retry(3, backoff=QUICK)
    ) as client:
        response = await client.get("/item")
    assert response.status_code == 200

    assert value(registry, CALLS, **on(base), http_response_status_code="200", error_type="") == 1
    assert value(registry, ATTEMPTS, **on(base), attempt_kind="first") == 1
    assert value(registry, ATTEMPTS, **on(base), attempt_kind="retry") == 2
    failed = {"http_response_status_code": "503", "error_type": "503"}
    assert value(registry, ATTEMPT_TIMES, **on(base), attempt_kind="first", **failed) == 1
    assert value(registry, ATTEMPT_TIMES, **on(base), attempt_kind="retry", **failed) == 1
    ok = {"http_response_status_code": "200", "error_type": ""}
    assert value(registry, ATTEMPT_TIMES, **on(base), attempt_kind="retry", **ok) == 1


async def test_a_hedge_and_the_loser_it_cancels(serve: Serve, registry: CollectorRegistry) -> None:
    arrived = 0

    async def slow_first(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 1:
            await asyncio.sleep(5)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", slow_first)
    base = await serve(app)
    metrics = ClientMetrics(registry)
    async with microcall.AsyncClient(
        base, observers=[metrics], strategy=microcall.hedged(0.02, linger=0)
    ) as client:
        response = await client.get("/")
    assert [attempt.kind for attempt in response.attempts] == ["first", "hedge"]

    assert value(registry, ATTEMPTS, **on(base), attempt_kind="hedge") == 1
    ok = {"http_response_status_code": "200", "error_type": ""}
    assert value(registry, ATTEMPT_TIMES, **on(base), attempt_kind="hedge", **ok) == 1
    lost = {"http_response_status_code": "", "error_type": "cancelled"}
    assert value(registry, ATTEMPT_TIMES, **on(base), attempt_kind="first", **lost) == 1


async def test_retries_the_budget_refused_are_counted_not_timed(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await failing_then_ok(serve, failures=1_000)
    metrics = ClientMetrics(registry)
    stingy = RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0)
    async with microcall.AsyncClient(
        base, observers=[metrics], strategy=microcall.retry(3, backoff=QUICK), budget=stingy
    ) as client:
        for _ in range(3):
            assert (await client.get("/x")).status_code == 503

    assert value(registry, REFUSED, **on(base), attempt_kind="retry", reason="retry_budget") == 3
    assert value(registry, ATTEMPTS, **on(base), attempt_kind="retry") == 0
    assert value(registry, ATTEMPTS, **on(base), attempt_kind="first") == 3


async def test_breaker_state_transitions_and_fast_failures(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await failing_then_ok(serve, failures=1_000)
    metrics = ClientMetrics(registry)
    breaker = CircuitBreakerConfig(minimum_throughput=2, break_duration=60)
    async with microcall.AsyncClient(
        base, observers=[metrics], breaker=breaker, strategy=microcall.retry(2, backoff=QUICK)
    ) as client:
        metrics.watch(client)
        endpoint = {"server_address": "127.0.0.1", "server_port": port_of(base)}
        assert value(registry, "microcall_client_breaker_state", **endpoint, state="closed") == 1
        assert (await client.get("/a")).status_code == 503  # two failures: the breaker opens
        for path in ("/b", "/c"):
            with pytest.raises(CircuitOpen):
                await client.get(path)

    assert value(registry, "microcall_client_breaker_state", **endpoint, state="open") == 1
    assert value(registry, "microcall_client_breaker_state", **endpoint, state="closed") == 0
    assert (
        value(registry, "microcall_client_breaker_transitions_total", **endpoint, state="open") == 1
    )
    assert value(registry, REFUSED, **on(base), attempt_kind="first", reason="circuit_open") == 2
    failed_fast = {"http_response_status_code": "", "error_type": "CircuitOpen"}
    assert value(registry, CALLS, **on(base), **failed_fast) == 2


async def test_ejections_are_counted_per_replica(
    serve: Serve, registry: CollectorRegistry, closed_port: int
) -> None:
    good = await books_app(serve)
    bad = f"http://127.0.0.1:{closed_port}"
    metrics = ClientMetrics(registry)
    async with microcall.AsyncClient(
        [good, bad],
        observers=[metrics],
        strategy=microcall.retry(3, backoff=QUICK),
        balancer=BalancerConfig(mode="round_robin"),
        ejection=OutlierEjectionConfig(consecutive_failures=2, max_ejection_percent=50),
    ) as client:
        metrics.watch(client)
        for number in range(8):
            assert (await client.get(f"/books/{number}")).status_code == 200

    bad_endpoint = {"server_address": "127.0.0.1", "server_port": str(closed_port)}
    assert value(registry, "microcall_client_ejections_total", **bad_endpoint) == 1
    # Attempts name the replica they went to; the call names the client's base.
    refused = {"http_response_status_code": "", "error_type": "ConnectError"}
    assert value(registry, ATTEMPT_TIMES, **on(bad), attempt_kind="first", **refused) >= 1
    assert value(registry, CALLS, **on(good), http_response_status_code="200", error_type="") == 8


async def test_calls_in_flight(serve: Serve, registry: CollectorRegistry) -> None:
    release = asyncio.Event()
    all_arrived = asyncio.Event()
    arrived = 0

    async def wait(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_arrived.set()
        await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", wait)
    base = await serve(app)
    metrics = ClientMetrics(registry)
    async with microcall.AsyncClient(base, observers=[metrics]) as client:
        calls = [asyncio.create_task(client.get("/")) for _ in range(3)]
        async with asyncio.timeout(10):
            await all_arrived.wait()
        assert value(registry, "http_client_active_requests", **on(base)) == 3
        release.set()
        await asyncio.gather(*calls)
    assert value(registry, "http_client_active_requests", **on(base)) == 0


async def test_absolute_urls_elsewhere_are_other_unless_listed(
    serve: Serve, registry: CollectorRegistry, closed_port: int
) -> None:
    base = await books_app(serve)
    listed = CollectorRegistry()
    async with (
        microcall.AsyncClient(observers=[ClientMetrics(registry)]) as anonymous,
        microcall.AsyncClient(
            observers=[ClientMetrics(listed, server_addresses=["127.0.0.1"])]
        ) as known,
    ):
        await anonymous.get(f"{base}/books/1")
        await known.get(f"{base}/books/1")
        with pytest.raises(ConnectError):
            await anonymous.get(f"http://127.0.0.1:{closed_port}/")

    assert label_values(registry, "http_client_request_duration_seconds", "server_address") == {
        "_OTHER"
    }
    assert label_values(registry, "http_client_request_duration_seconds", "error_type") == {
        "",
        "ConnectError",
    }
    assert value(listed, CALLS, **on(base), http_response_status_code="200", error_type="") == 1


async def test_a_relative_calls_url_given_back_as_absolute_is_labelled_as_absolute(
    serve: Serve, registry: CollectorRegistry
) -> None:
    # The same URL object, relative on one call and absolute on the next:
    # the target found for the first must not be reused for the second.
    base = await books_app(serve)
    async with microcall.AsyncClient(base, observers=[ClientMetrics(registry)]) as client:
        first = await client.get("books/1")
        assert first.request is not None
        await client.get(first.request.url)
        await client.post(first.request.url)

    assert value(registry, CALLS, **on(base), http_response_status_code="200", error_type="") == 1
    other = {"server_address": "_OTHER", "server_port": ""}
    assert (
        value(
            registry,
            CALLS,
            http_request_method="GET",
            **other,
            http_response_status_code="200",
            error_type="",
        )
        == 1
    )
    assert (
        value(
            registry,
            CALLS,
            http_request_method="POST",
            **other,
            http_response_status_code="405",
            error_type="405",
        )
        == 1
    )


async def test_one_metrics_object_serves_many_clients_and_refuses_a_twin(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await books_app(serve)
    metrics = ClientMetrics(registry)
    async with (
        microcall.AsyncClient(base, observers=[metrics]) as one,
        microcall.AsyncClient(base, observers=[metrics]) as two,
    ):
        await one.get("/books/1")
        await two.get("/books/1")
    assert value(registry, CALLS, **on(base), http_response_status_code="200", error_type="") == 2
    with pytest.raises(ConfigurationError, match="one metrics object per registry"):
        ClientMetrics(registry)


def test_the_blocking_front_doors_report_and_can_be_watched(registry: CollectorRegistry) -> None:
    metrics = ClientMetrics(registry)
    with microcall.Client(
        "http://127.0.0.1:9", observers=[metrics], breaker=CircuitBreakerConfig()
    ) as client:
        metrics.watch(client)
        assert (
            value(
                registry,
                "microcall_client_breaker_state",
                server_address="127.0.0.1",
                server_port="9",
                state="closed",
            )
            == 1
        )
    with pytest.raises(UsageError, match="base URL"):
        metrics.watch(microcall.Client())
