"""Interoperability with aio-request, which speaks the same two headers.

aio-request's client calling microcall-protected aiohttp and ASGI services,
and microcall's client calling a service protected by aio-request's own
aiohttp middleware: the deadline is honoured both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_request
import aiohttp
import pytest
from aiohttp import web
from fastapi import FastAPI

import microcall
from microcall.server import ServerOptions, ServerStats, trust_all
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from tests.conftest import Serve
from tests.server.conftest import ServeASGI

PROTECTED = ServerOptions(trust=trust_all, cancel_on_deadline=True)


def seen() -> dict[str, Any]:
    deadline = microcall.current_deadline()
    priority = microcall.current_priority()
    assert deadline is not None
    assert priority is not None
    return {"remaining": deadline.remaining(), "priority": priority.value}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def aio_request_client(session: aiohttp.ClientSession, base: str) -> aio_request.Client:
    return aio_request.setup(
        transport=aio_request.AioHttpTransport(session),
        endpoint=base,
        safe_method_strategy=aio_request.single_attempt_strategy(),
    )


async def ask(client: aio_request.Client, path: str, seconds: float, priority: str) -> Any:
    async with client.request(
        aio_request.get(path),
        deadline=aio_request.Deadline.from_timeout(seconds),
        priority=aio_request.Priority(priority),
    ) as response:
        return response.status, (await response.json() if response.status == 200 else None)


async def check_aio_request_against(base: str, session: aiohttp.ClientSession) -> None:
    client = aio_request_client(session, base)
    status, body = await ask(client, "/seen", 1.5, "high")
    assert status == 200
    assert 1.0 < body["remaining"] <= 1.5
    assert body["priority"] == "high"
    status, body = await ask(client, "/seen", 0.8, "low")
    assert body["priority"] == "low"
    assert body["remaining"] <= 0.8


async def test_aio_request_calls_a_microcall_aiohttp_service(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    stopped = asyncio.Event()

    async def seen_handler(request: web.Request) -> web.Response:
        return web.json_response(seen())

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return web.Response(text="too late")

    protect = AiohttpMiddleware(PROTECTED)
    app = web.Application(middlewares=[protect])
    app.router.add_get("/seen", seen_handler)
    app.router.add_get("/slow", slow)
    base = await serve(app)
    await check_aio_request_against(base, session)

    # The server stops the work when aio-request's deadline passes.
    client = aio_request_client(session, base)
    status, _ = await ask(client, "/slow", 0.3, "normal")
    assert status == 408  # aio-request's own answer once its deadline passed
    await asyncio.wait_for(stopped.wait(), timeout=5)
    # Stopped by the middleware's deadline timer, or a moment earlier by
    # aio-request hanging up at the same deadline (aiohttp then cancels it):
    # either way the handler never ran past its deadline.
    assert protect.stats.overran == 0


async def test_aio_request_calls_a_microcall_asgi_service(
    serve_asgi: ServeASGI, session: aiohttp.ClientSession
) -> None:
    stopped = asyncio.Event()
    stats = ServerStats()
    app = FastAPI()
    app.add_middleware(ASGIMiddleware, options=PROTECTED, stats=stats)

    @app.get("/seen")
    async def seen_endpoint() -> dict[str, Any]:
        return seen()

    @app.get("/slow")
    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "too late"

    base = await serve_asgi(app)
    await check_aio_request_against(base, session)
    client = aio_request_client(session, base)
    status, _ = await ask(client, "/slow", 0.3, "normal")
    assert status == 408
    await asyncio.wait_for(stopped.wait(), timeout=5)
    assert stats.cancelled == 1


async def test_microcall_calls_an_aio_request_protected_service(serve: Serve) -> None:
    stopped = asyncio.Event()

    async def context(request: web.Request) -> web.Response:
        inherited = aio_request.get_context()
        assert inherited.deadline is not None
        assert inherited.priority is not None
        return web.json_response(
            {"remaining": inherited.deadline.timeout, "priority": str(inherited.priority)}
        )

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return web.Response(text="too late")

    app = web.Application(
        middlewares=[aio_request.aiohttp_middleware_factory(timeout=20, cancel_on_timeout=True)]
    )
    app.router.add_get("/context", context)
    app.router.add_get("/slow", slow)
    base = await serve(app)
    async with microcall.AsyncClient(base) as client:
        body = (await client.get("/context", timeout=1.5, priority="low")).json()
        assert 1.0 < body["remaining"] <= 1.5  # our deadline, not its 20 s default
        assert body["priority"] == "low"
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            answer = await client.get("/slow", timeout=0.3)
        except microcall.DeadlineExceeded:
            pass
        else:
            # The time sent is rounded down, so aio-request's own timer, set from it,
            # may fire a moment before ours and answer for the handler it cancelled.
            assert answer.status_code in (408, 504), answer
        assert loop.time() - began < 5
    await asyncio.wait_for(stopped.wait(), timeout=5)  # it stopped at our deadline too


async def test_an_expired_refusal_from_microcall_is_final_for_aio_request(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    calls = 0

    async def seen_handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(seen())

    # A floor of 1 s makes aio-request's 0.5 s deadline arrive "expired";
    # X-Do-Not-Retry makes even its retrying strategy stop at one attempt.
    protect = AiohttpMiddleware(ServerOptions(floor=1.0))
    app = web.Application(middlewares=[protect])
    app.router.add_get("/seen", seen_handler)
    base = await serve(app)
    client = aio_request.setup(transport=aio_request.AioHttpTransport(session), endpoint=base)
    async with client.request(
        aio_request.get("/seen"), deadline=aio_request.Deadline.from_timeout(0.5)
    ) as response:
        assert response.status == 408
    assert protect.stats.expired == 1
    assert calls == 0
