"""A callable and HTTP clients share one retry budget and one deadline, against real servers."""

from __future__ import annotations

import pytest
from aiohttp import web

import microcall
from microcall import AttemptKind, Resilience, RetryBudget, RetryBudgetConfig
from microcall.server.aiohttp import AiohttpMiddleware
from tests.conftest import Serve
from tests.resilience.conftest import Flaky

NO_WAIT = microcall.Backoff(base=0.0)


def _unavailable(hits: list[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


def _timeouts(seen: list[str | None]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Request-Timeout"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def test_the_callables_retries_empty_the_budget_and_the_clients_retry_is_refused(
    serve: Serve,
) -> None:
    # A budget with room for exactly one retry in its window, and no traffic share.
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0.1))
    hits: list[str] = []
    url = await serve(_unavailable(hits))
    flaky = Flaky(ConnectionError("reset"), value="row")

    async def query() -> object:
        return flaky()

    database = Resilience(
        strategy=microcall.retry(3, backoff=NO_WAIT), on=ConnectionError, budget=budget
    )
    async with microcall.AsyncClient(
        url, strategy=microcall.retry(3, backoff=NO_WAIT), budget=budget
    ) as client:
        assert await database.acall(query) == "row"  # the one retry in the budget
        response = await client.get("/books")
    assert response.status_code == 503
    assert hits == ["/books"]  # the client's retry never went out
    refused = response.attempts[1]
    assert (refused.kind, refused.sent, refused.error) == (
        AttemptKind.RETRY,
        False,
        "retry budget empty",
    )
    assert (budget.deposited, budget.withdrawn, budget.refused) == (2, 1, 1)


async def test_the_clients_retries_empty_the_budget_and_the_callables_retry_is_refused(
    serve: Serve,
) -> None:
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0.1))
    hits: list[str] = []
    url = await serve(_unavailable(hits))
    flaky = Flaky(ConnectionError("reset"), value="row")
    database = Resilience(
        strategy=microcall.retry(3, backoff=NO_WAIT), on=ConnectionError, budget=budget
    )
    async with microcall.AsyncClient(
        url, strategy=microcall.retry(2, backoff=NO_WAIT), budget=budget
    ) as client:
        await client.get("/books")
    assert len(hits) == 2  # the client spent the one retry
    with pytest.raises(microcall.AttemptsExhausted) as raised:
        database.call(flaky)
    assert raised.value.attempts[1].error == "retry budget empty"
    assert flaky.calls == 1


async def test_an_http_call_inside_the_callable_inherits_its_deadline(serve: Serve) -> None:
    seen: list[str | None] = []
    url = await serve(_timeouts(seen))
    async with microcall.AsyncClient(url, timeout=30.0) as client:

        @microcall.resilient(
            strategy=microcall.retry(2, attempt_timeout=8.0), on=ConnectionError, timeout=20.0
        )
        async def enrich(book_id: int) -> object:
            response = await client.get(f"/books/{book_id}")
            return response.json()

        assert await enrich(1) == {"ok": True}
        with microcall.deadline(5.0):  # an outer deadline caps the callable's
            await enrich(2)
    first, second = (float(value or "nan") for value in seen)
    assert 0 < first <= 8.0  # the attempt's own time, not the client's 30 s
    assert 0 < second <= 5.0


async def test_a_callable_in_a_server_handler_inherits_the_requests_remaining_time(
    serve: Serve,
) -> None:
    seen: list[str | None] = []
    inner_url = await serve(_timeouts(seen))
    inner = microcall.AsyncClient(inner_url, timeout=30.0)

    @microcall.resilient(timeout=20.0)
    async def lookup() -> object:
        return (await inner.get("/price")).json()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(await lookup())

    outer = web.Application(middlewares=[AiohttpMiddleware()])
    outer.router.add_get("/page", handler)
    outer_url = await serve(outer)
    try:
        async with microcall.AsyncClient(outer_url, timeout=5.0) as client:
            response = await client.get("/page")
    finally:
        await inner.aclose()
    assert response.json() == {"ok": True}
    (value,) = seen
    assert value is not None
    assert 0 < float(value) <= 5.0  # the request's 5 s, not the callable's 20 or the client's 30
