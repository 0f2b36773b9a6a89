"""The ASGI middleware under uvicorn, with FastAPI and plain Starlette (127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import microcall
from microcall.server import ServerOptions, ServerStats, default_timeout, trust_networks
from microcall.server.asgi import ASGIMiddleware
from tests.server._raw import raw_get
from tests.server.conftest import ServeASGI


def seen() -> dict[str, Any]:
    deadline = microcall.current_deadline()
    priority = microcall.current_priority()
    return {
        "remaining": None if deadline is None else deadline.remaining(),
        "priority": None if priority is None else priority.value,
        "thread": threading.current_thread().name,
    }


def fastapi_app(options: ServerOptions | None = None, stats: ServerStats | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ASGIMiddleware, options=options, stats=stats)

    @app.get("/async")
    async def in_the_loop() -> dict[str, Any]:
        return seen()

    @app.get("/sync")
    def in_a_worker_thread() -> dict[str, Any]:
        return seen()

    @app.get("/long")
    @default_timeout(40)
    async def long_async() -> dict[str, Any]:
        return seen()

    @app.get("/long-sync")
    @default_timeout(50)
    def long_sync() -> dict[str, Any]:
        return seen()

    return app


async def test_async_and_threaded_endpoints_see_the_callers_context(serve_asgi: ServeASGI) -> None:
    stats = ServerStats()
    base = await serve_asgi(
        fastapi_app(ServerOptions(trust=trust_networks("127.0.0.1/32")), stats=stats)
    )
    async with microcall.AsyncClient(base) as client:
        in_loop = (await client.get("/async", timeout=2.0, priority="high")).json()
        in_thread = (await client.get("/sync", timeout=3.0, priority="low")).json()
    assert 1.0 < in_loop["remaining"] <= 2.0
    assert in_loop["priority"] == "high"
    assert 2.0 < in_thread["remaining"] <= 3.0
    assert in_thread["priority"] == "low"
    assert in_thread["thread"] != in_loop["thread"]  # really ran in the thread pool
    assert stats.admitted == 2


async def test_untrusted_high_priority_is_served_as_normal(serve_asgi: ServeASGI) -> None:
    stats = ServerStats()
    base = await serve_asgi(fastapi_app(stats=stats))
    async with microcall.AsyncClient(base) as client:
        body = (await client.get("/async", priority="high")).json()
    assert body["priority"] == "normal"
    assert stats.downgraded == 1


async def test_expired_requests_are_refused_before_routing(serve_asgi: ServeASGI) -> None:
    stats = ServerStats()
    base = await serve_asgi(fastapi_app(stats=stats))
    status, headers, _ = await raw_get(base, "/async", [(b"X-Request-Timeout", b"0")])
    assert status == 408
    assert headers["x-do-not-retry"] == "1"
    assert stats.expired == 1
    assert stats.admitted == 0


async def test_garbage_headers_are_ignored(serve_asgi: ServeASGI) -> None:
    stats = ServerStats()
    base = await serve_asgi(fastapi_app(ServerOptions(default_timeout=4.0), stats=stats))
    for headers in (
        [(b"X-Request-Timeout", b"\xe2\x88\x9e"), (b"X-Request-Priority", b"\xff")],
        [(b"X-Request-Timeout", b"1"), (b"X-Request-Timeout", b"2")],
        [(b"X-Request-Timeout", b"1e400"), (b"X-Request-Priority", b"HIGHEST")],
    ):
        status, _, body = await raw_get(base, "/async", headers)
        assert status == 200, body
    assert stats.malformed_timeout == 3
    assert stats.malformed_priority == 2


async def test_strict_mode_answers_400(serve_asgi: ServeASGI) -> None:
    base = await serve_asgi(fastapi_app(ServerOptions(strict=True)))
    status, _, _ = await raw_get(base, "/async", [(b"X-Request-Priority", b"soon")])
    assert status == 400


async def test_route_default_timeouts_on_fastapi_endpoints(serve_asgi: ServeASGI) -> None:
    base = await serve_asgi(fastapi_app(ServerOptions(default_timeout=2.0)))
    async with microcall.AsyncClient(base) as client:
        # raw_get sends no X-Request-Timeout: the route's default applies.
        for path, expected in (("/long", 40.0), ("/long-sync", 50.0), ("/async", 2.0)):
            status, _, body = await raw_get(base, path)
            assert status == 200
            remaining = float(body.split(b'"remaining":')[1].split(b",")[0])
            assert expected - 1.0 < remaining <= expected, path
        # A caller's deadline wins over the route's.
        caller = (await client.get("/long", timeout=1.0)).json()
    assert caller["remaining"] <= 1.0


async def test_cancel_on_deadline(serve_asgi: ServeASGI) -> None:
    cancelled = asyncio.Event()
    stats = ServerStats()
    app = FastAPI()
    app.add_middleware(ASGIMiddleware, options=ServerOptions(cancel_on_deadline=True), stats=stats)

    @app.get("/stuck")
    async def stuck() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            await asyncio.sleep(30)
            yield b"never\n"

        return StreamingResponse(chunks())

    base = await serve_asgi(app)
    status, headers, _ = await raw_get(base, "/stuck", [(b"X-Request-Timeout", b"0.3")])
    assert status == 408
    assert headers["x-do-not-retry"] == "1"
    assert cancelled.is_set()
    # Half a response cannot become a 408: the connection is closed instead.
    status, _, body = await raw_get(base, "/stream", [(b"X-Request-Timeout", b"0.3")])
    assert status == 200
    assert b"never" not in body
    assert stats.cancelled == 2


async def test_plain_starlette(serve_asgi: ServeASGI) -> None:
    async def handler(request: Request) -> JSONResponse:
        return JSONResponse(seen())

    stats = ServerStats()
    app = Starlette(
        routes=[Route("/", handler)],
        middleware=[Middleware(ASGIMiddleware, options=ServerOptions(), stats=stats)],
    )
    base = await serve_asgi(app)
    async with microcall.AsyncClient(base) as client:
        body = (await client.get("/", timeout=1.5, priority="low")).json()
    assert 0 < body["remaining"] <= 1.5
    assert body["priority"] == "low"
    assert stats.admitted == 1


async def test_other_scopes_pass_through_untouched() -> None:
    calls: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        assert microcall.current_deadline() is None

    middleware = ASGIMiddleware(inner)

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        pass

    await middleware({"type": "lifespan"}, receive, send)
    await middleware({"type": "websocket", "headers": []}, receive, send)
    assert calls == ["lifespan", "websocket"]
    assert middleware.stats.admitted == 0
