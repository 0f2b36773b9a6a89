"""A handler's downstream call runs out of the request's deadline: answered as expired.

Each server (aiohttp; Starlette under uvicorn; Flask under werkzeug's threaded
server, all on 127.0.0.1) has a handler that calls a slow aiohttp server with
a microcall client, inheriting the request's deadline. When that deadline
runs out, the hop answers as it answers a request that arrived expired: 408,
``X-Do-Not-Retry: 1``, counted, observed as ``refused="deadline"``, and
nothing logged at ERROR. A shorter timeout of the handler's own is not the
request's deadline: it propagates as the handler's own error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from flask import Flask
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import microcall
from microcall.observe import LogEvents
from microcall.observe.prometheus import ServerMetrics
from microcall.server import ServerOptions, ServerStats
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware
from tests.conftest import Serve
from tests.observe._metrics import value
from tests.server._waiting import eventually
from tests.server.conftest import ServeASGI, ServeWSGI

# The caller's deadline: long enough for the hop to start its downstream call
# on a loaded machine, short next to the downstream's sleep.
DEADLINE = "0.4"
# A handler's own timeout, well inside a long request deadline.
OWN_TIMEOUT = 0.2


@pytest.fixture
async def slow(serve: Serve) -> str:
    """A downstream server that answers nobody in time."""

    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/", sleep)
    return await serve(app)


@pytest.fixture
def quiet_check(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also catching uvicorn's error log (which does not propagate to the root)."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        yield caplog
    finally:
        uvicorn_log.removeHandler(caplog.handler)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def call(base: str, path: str, timeout: str) -> tuple[int, str | None, bytes]:
    """The caller: a plain HTTP request carrying ``X-Request-Timeout`` (it waits longer)."""
    headers = {"X-Request-Timeout": timeout}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.get(base + path, headers=headers) as response,
    ):
        return response.status, response.headers.get("X-Do-Not-Retry"), await response.read()


def observed(stats: ServerStats) -> tuple[ServerOptions, CollectorRegistry]:
    registry = CollectorRegistry()
    options = ServerOptions(observers=[ServerMetrics(registry=registry), LogEvents()])
    return options, registry


async def assert_answered_as_expired(
    answer: tuple[int, str | None, bytes], stats: ServerStats, registry: CollectorRegistry
) -> None:
    status, do_not_retry, body = answer
    assert status == 408
    assert do_not_retry == "1"
    assert body == b"deadline expired: nobody is waiting for this answer\n"
    assert stats.deadline_exceeded == 1
    assert stats.expired == 0
    assert stats.overran == 0
    family = "microcall_server_deadline_exceeded_total"
    # A WSGI server tells the observers when it closes the response, just after sending it.
    await eventually(lambda: value(registry, family, priority="normal") == 1)


# ------------------------------------------------------------------ aiohttp


@pytest.fixture
async def aiohttp_hop(serve: Serve, slow: str) -> AsyncIterator[tuple[str, AiohttpMiddleware, Any]]:
    stats = ServerStats()
    options, registry = observed(stats)
    protect = AiohttpMiddleware(options, stats=stats)
    async with microcall.AsyncClient(slow) as downstream:

        async def inherited(request: web.Request) -> web.Response:
            await downstream.get("/")
            return web.Response(text="unreachable")

        async def own_timeout(request: web.Request) -> web.Response:
            await downstream.get("/", timeout=OWN_TIMEOUT)
            return web.Response(text="unreachable")

        app = web.Application(middlewares=[protect])
        app.router.add_get("/inherited", inherited)
        app.router.add_get("/own", own_timeout)
        yield await serve(app), protect, registry


async def test_aiohttp_answers_an_inherited_deadline_as_expired(
    aiohttp_hop: tuple[str, AiohttpMiddleware, CollectorRegistry],
    quiet_check: pytest.LogCaptureFixture,
) -> None:
    base, protect, registry = aiohttp_hop
    answer = await call(base, "/inherited", DEADLINE)  # was 504, retriable
    await assert_answered_as_expired(answer, protect.stats, registry)
    assert errors(quiet_check) == []
    assert protect.limiter is None


async def test_aiohttp_leaves_a_handlers_own_timeout_to_the_handler(
    aiohttp_hop: tuple[str, AiohttpMiddleware, CollectorRegistry],
) -> None:
    base, protect, _ = aiohttp_hop
    status, do_not_retry, _ = await call(base, "/own", "10")
    assert status >= 500  # aiohttp's own answer to an unhandled error
    assert do_not_retry is None
    assert protect.stats.deadline_exceeded == 0


# ------------------------------------------------------------------ ASGI: Starlette under uvicorn


@pytest.fixture
async def starlette_hop(
    serve_asgi: ServeASGI, slow: str
) -> AsyncIterator[tuple[str, ServerStats, CollectorRegistry]]:
    stats = ServerStats()
    options, registry = observed(stats)
    async with microcall.AsyncClient(slow) as downstream:

        async def inherited(request: Request) -> PlainTextResponse:
            await downstream.get("/")
            return PlainTextResponse("unreachable")

        async def own_timeout(request: Request) -> PlainTextResponse:
            await downstream.get("/", timeout=OWN_TIMEOUT)
            return PlainTextResponse("unreachable")

        app = Starlette(
            routes=[Route("/inherited", inherited), Route("/own", own_timeout)],
            middleware=[Middleware(ASGIMiddleware, options=options, stats=stats)],
        )
        yield await serve_asgi(app), stats, registry


async def test_starlette_answers_an_inherited_deadline_as_expired(
    starlette_hop: tuple[str, ServerStats, CollectorRegistry],
    quiet_check: pytest.LogCaptureFixture,
) -> None:
    base, stats, registry = starlette_hop
    answer = await call(base, "/inherited", DEADLINE)  # was 500 and a logged traceback
    await assert_answered_as_expired(answer, stats, registry)
    assert errors(quiet_check) == []


async def test_starlette_leaves_a_handlers_own_timeout_to_the_handler(
    starlette_hop: tuple[str, ServerStats, CollectorRegistry],
    quiet_check: pytest.LogCaptureFixture,
) -> None:
    base, stats, _ = starlette_hop
    status, do_not_retry, _ = await call(base, "/own", "10")
    assert status == 500
    assert do_not_retry is None
    assert stats.deadline_exceeded == 0
    assert errors(quiet_check)  # the server logs it, as any unhandled error


async def test_asgi_counts_it_after_an_outer_layer_already_answered(
    serve_asgi: ServeASGI, slow: str, quiet_check: pytest.LogCaptureFixture
) -> None:
    # Wrapped outside Starlette, whose outermost layer answers 500 before re-raising.
    stats = ServerStats()
    async with microcall.AsyncClient(slow) as downstream:

        async def inherited(request: Request) -> PlainTextResponse:
            await downstream.get("/")
            return PlainTextResponse("unreachable")

        app = ASGIMiddleware(Starlette(routes=[Route("/", inherited)]), stats=stats)
        status, _, _ = await call(await serve_asgi(app), "/", DEADLINE)
    assert status == 500
    assert stats.deadline_exceeded == 1
    assert errors(quiet_check) == []


# ------------------------------------------------------------------ WSGI: Flask, threaded server


@pytest.fixture
def flask_hop(
    serve_wsgi: ServeWSGI, slow: str
) -> Iterator[tuple[str, WSGIMiddleware, CollectorRegistry]]:
    stats = ServerStats()
    options, registry = observed(stats)
    with microcall.Client(slow) as downstream:
        app = Flask(__name__)

        @app.get("/inherited")
        def inherited() -> str:
            downstream.get("/")
            return "unreachable"

        @app.get("/own")
        def own_timeout() -> str:
            downstream.get("/", timeout=OWN_TIMEOUT)
            return "unreachable"

        protect = WSGIMiddleware(app.wsgi_app, options, stats=stats)
        app.wsgi_app = protect  # type: ignore[method-assign]
        app.register_error_handler(microcall.DeadlineExceeded, protect.deadline_exceeded)
        yield serve_wsgi(app), protect, registry


async def test_flask_answers_an_inherited_deadline_as_expired(
    flask_hop: tuple[str, WSGIMiddleware, CollectorRegistry],
    quiet_check: pytest.LogCaptureFixture,
) -> None:
    base, protect, registry = flask_hop
    answer = await call(base, "/inherited", DEADLINE)  # was 500 and a logged traceback
    await assert_answered_as_expired(answer, protect.stats, registry)
    assert errors(quiet_check) == []


async def test_flask_leaves_a_handlers_own_timeout_to_the_handler(
    flask_hop: tuple[str, WSGIMiddleware, CollectorRegistry],
    quiet_check: pytest.LogCaptureFixture,
) -> None:
    base, protect, _ = flask_hop
    status, do_not_retry, _ = await call(base, "/own", "10")
    assert status == 500
    assert do_not_retry is None
    assert protect.stats.deadline_exceeded == 0
    assert errors(quiet_check)  # Flask logs it, as any error of a view


async def test_a_plain_wsgi_app_that_raises_is_answered_too(
    serve_wsgi: ServeWSGI, slow: str, quiet_check: pytest.LogCaptureFixture
) -> None:
    stats = ServerStats()
    with microcall.Client(slow) as downstream:

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            downstream.get("/")
            start_response("200 OK", [])
            return [b"unreachable"]

        base = serve_wsgi(WSGIMiddleware(app, stats=stats))
        status, do_not_retry, _ = await call(base, "/", DEADLINE)
    assert (status, do_not_retry) == (408, "1")
    assert stats.deadline_exceeded == 1
    assert errors(quiet_check) == []
