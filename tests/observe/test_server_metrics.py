"""ServerMetrics through the aiohttp, ASGI and WSGI middleware, on real servers at 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fastapi import FastAPI
from flask import Flask
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from microcall.errors import ConfigurationError
from microcall.observe import LogLimiter, logs
from microcall.observe.hooks import InboundRequest
from microcall.observe.prometheus import ServerMetrics
from microcall.server import ServerOptions, Shedding, StaticLimit
from microcall.server._serverwatch import ServerWatch
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware
from tests.conftest import Serve
from tests.observe._metrics import label_values, settled, value
from tests.server.conftest import ServeASGI, ServeWSGI

DURATIONS = "http_server_request_duration_seconds_count"


async def get(url: str, *, method: str = "GET", **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as response,
    ):
        await response.read()
        return response.status


def served(method: str, route: str, status: str, error: str = "") -> dict[str, str]:
    return {
        "http_request_method": method,
        "http_route": route,
        "http_response_status_code": status,
        "error_type": error,
    }


async def test_aiohttp_routes_are_templates(serve: Serve, registry: CollectorRegistry) -> None:
    async def book(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["id"])

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPGone()

    sub = web.Application()
    sub.router.add_get("/items/{id}", book)
    app = web.Application(
        middlewares=[AiohttpMiddleware(ServerOptions(observers=[ServerMetrics(registry)]))]
    )
    app.router.add_get("/books/{id}", book)
    app.router.add_get("/broken", broken)
    app.router.add_get("/gone", gone)
    app.add_subapp("/api", sub)
    base = await serve(app)

    for number in range(3):
        assert await get(f"{base}/books/{number}?q={number}") == 200
    assert await get(f"{base}/api/items/7") == 200
    assert await get(f"{base}/no/such/page") == 404
    assert await get(f"{base}/broken") == 500
    assert await get(f"{base}/gone") == 410

    assert value(registry, DURATIONS, **served("GET", "/books/{id}", "200")) == 3
    assert value(registry, DURATIONS, **served("GET", "/api/items/{id}", "200")) == 1
    assert value(registry, DURATIONS, **served("GET", "_OTHER", "404")) == 1
    assert value(registry, DURATIONS, **served("GET", "/broken", "", "RuntimeError")) == 1
    assert value(registry, DURATIONS, **served("GET", "/gone", "410")) == 1
    assert value(registry, "http_server_active_requests", http_request_method="GET") == 0


async def test_asgi_routes_are_starlette_templates_mounts_included(
    serve_asgi: ServeASGI, registry: CollectorRegistry
) -> None:
    metrics = ServerMetrics(registry)
    api = FastAPI()

    @api.get("/books/{book_id}")
    async def book(book_id: int) -> dict[str, Any]:
        return {"id": book_id}

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item"])

    api.mount("/shop", Starlette(routes=[Mount("/v1", routes=[Route("/items/{item}", item)])]))
    api.add_middleware(ASGIMiddleware, options=ServerOptions(observers=[metrics]))
    base = await serve_asgi(api)

    for number in range(3):
        assert await get(f"{base}/books/{number}") == 200
    assert await get(f"{base}/books/not-a-number") == 422
    assert await get(f"{base}/shop/v1/items/x") == 200
    assert await get(f"{base}/nothing/here") == 404
    # A path that matched with a method that did not: no route, as on aiohttp and Flask.
    assert await get(f"{base}/books/1", method="DELETE") == 405

    assert value(registry, DURATIONS, **served("GET", "/books/{book_id}", "200")) == 3
    assert value(registry, DURATIONS, **served("GET", "/books/{book_id}", "422")) == 1
    assert value(registry, DURATIONS, **served("GET", "/shop/v1/items/{item}", "200")) == 1
    assert value(registry, DURATIONS, **served("GET", "_OTHER", "404")) == 1
    assert value(registry, DURATIONS, **served("DELETE", "_OTHER", "405")) == 1


async def test_asgi_routes_keep_mount_prefixes_when_the_middleware_wraps_the_app(
    serve_asgi: ServeASGI, registry: CollectorRegistry
) -> None:
    # ASGIMiddleware(app) from outside: the request reaches the middleware
    # before Starlette has put itself in the scope.
    async def thing(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["tid"])

    things = Starlette(routes=[Route("/things/{tid}", thing)])
    inner = Starlette(routes=[Mount("/sub", app=things)])
    wrapped = ASGIMiddleware(inner, ServerOptions(observers=[ServerMetrics(registry)]))
    base = await serve_asgi(wrapped)

    assert await get(f"{base}/sub/things/9") == 200
    assert value(registry, DURATIONS, **served("GET", "/sub/things/{tid}", "200")) == 1
    assert value(registry, DURATIONS, **served("GET", "/things/{tid}", "200")) == 0


def test_wsgi_routes_are_flask_rules(serve_wsgi: ServeWSGI, registry: CollectorRegistry) -> None:
    flask = Flask(__name__)

    @flask.get("/books/<int:book_id>")
    def book(book_id: int) -> str:
        return str(book_id)

    @flask.get("/stream")
    def stream() -> Any:
        return flask.response_class((part for part in ("a", "b")), mimetype="text/plain")

    flask.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
        flask.wsgi_app, ServerOptions(observers=[ServerMetrics(registry)])
    )
    base = serve_wsgi(flask)

    async def requests() -> None:
        for number in range(3):
            assert await get(f"{base}/books/{number}") == 200
        assert await get(f"{base}/stream") == 200
        assert await get(f"{base}/missing") == 404
        assert await get(f"{base}/books/1", method="BREW") == 405

    asyncio.run(requests())
    for labels, count in (
        (served("GET", "/books/<int:book_id>", "200"), 3),
        (served("GET", "/stream", "200"), 1),
        (served("GET", "_OTHER", "404"), 1),
        (served("_OTHER", "_OTHER", "405"), 1),
    ):
        assert settled(partial(value, registry, DURATIONS, **labels), count) == count
    assert value(registry, "http_server_active_requests", http_request_method="GET") == 0


async def test_expired_and_shed_requests_are_counted_by_priority(
    serve: Serve, registry: CollectorRegistry
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="done")

    options = ServerOptions(
        observers=[ServerMetrics(registry)], shedding=Shedding(limit=StaticLimit(limit=1))
    )
    app = web.Application(middlewares=[AiohttpMiddleware(options)])
    app.router.add_get("/hold", hold)
    base = await serve(app)

    assert await get(f"{base}/hold", **{"X-Request-Timeout": "0.001"}) == 408
    assert (
        await get(f"{base}/hold", **{"X-Request-Timeout": "0", "X-Request-Priority": "low"}) == 408
    )
    held = asyncio.create_task(get(f"{base}/hold", **{"X-Request-Priority": "normal"}))
    async with asyncio.timeout(10):
        await entered.wait()
    assert value(registry, "http_server_active_requests", http_request_method="GET") == 1
    assert await get(f"{base}/hold", **{"X-Request-Priority": "low"}) == 503
    assert await get(f"{base}/hold", **{"X-Request-Priority": "normal"}) == 503
    release.set()
    assert await held == 200

    assert value(registry, "microcall_server_expired_total", priority="normal") == 1
    assert value(registry, "microcall_server_expired_total", priority="low") == 1
    assert value(registry, "microcall_server_shed_total", priority="low") == 1
    assert value(registry, "microcall_server_shed_total", priority="normal") == 1
    assert value(registry, DURATIONS, **served("GET", "/hold", "503", "503")) == 2
    assert value(registry, DURATIONS, **served("GET", "/hold", "408")) == 2


async def test_refusals_before_routing_in_asgi_and_wsgi(
    serve_asgi: ServeASGI, serve_wsgi: ServeWSGI, registry: CollectorRegistry
) -> None:
    metrics = ServerMetrics(registry)
    options = ServerOptions(observers=[metrics])
    api = FastAPI()
    api.add_middleware(ASGIMiddleware, options=options)
    flask = Flask(__name__)
    flask.wsgi_app = WSGIMiddleware(flask.wsgi_app, options)  # type: ignore[method-assign]
    for base in (await serve_asgi(api), serve_wsgi(flask)):
        assert (
            await get(f"{base}/x", **{"X-Request-Timeout": "0", "X-Request-Priority": "low"}) == 408
        )
    expired = {"priority": "low"}
    assert settled(lambda: value(registry, "microcall_server_expired_total", **expired), 2) == 2
    assert settled(lambda: value(registry, DURATIONS, **served("GET", "_OTHER", "408")), 2) == 2


def test_grpc_requests_are_rpc_calls(registry: CollectorRegistry) -> None:
    """The seam a gRPC interceptor uses: protocol "grpc", the full method as route, the code as status."""
    metrics = ServerMetrics(registry)

    def call(method: str, route: str | None, code: int) -> None:
        watch = ServerWatch(
            [metrics],
            InboundRequest(
                protocol="grpc", method=method, path=method, scheme="http", header=lambda name: None
            ),
        )
        watch.handler_done()
        watch.ended(code, route)

    call("/shop.Recommendations/Recommend", "/shop.Recommendations/Recommend", 0)
    call("/shop.Recommendations/Recommend", "/shop.Recommendations/Recommend", 14)
    call("/made.Up/Thing", None, 12)  # an unknown method: the interceptor names no route
    name = "rpc_server_call_duration_seconds_count"
    rpc = {"rpc_system": "grpc", "rpc_service": "shop.Recommendations", "rpc_method": "Recommend"}
    assert value(registry, name, **rpc, rpc_grpc_status_code="0") == 1
    assert value(registry, name, **rpc, rpc_grpc_status_code="14") == 1
    assert label_values(registry, "rpc_server_call_duration_seconds", "rpc_service") == {
        "shop.Recommendations",
        "_OTHER",
    }
    assert value(registry, "rpc_server_active_calls", rpc_system="grpc") == 0


def test_an_observer_that_fails_never_breaks_a_request(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())  # lines of its own

    class Broken:
        def request_started(self, request: InboundRequest) -> None:
            raise RuntimeError("observer bug")

    request = InboundRequest(
        protocol="http", method="GET", path="/", scheme="http", header=lambda n: None
    )
    for _ in range(100):  # it fails on every request: the log hears of it a few times
        watch = ServerWatch([Broken()], request)
        watch.handler_done()
        watch.ended(200, "/")
    assert 1 <= len(caplog.records) <= 5
    assert "observer bug" in caplog.text


def test_observers_are_checked_and_metrics_registered_once(registry: CollectorRegistry) -> None:
    with pytest.raises(ConfigurationError, match="request_started"):
        ServerOptions(observers=[object()])  # type: ignore[list-item]
    ServerMetrics(registry)
    with pytest.raises(ConfigurationError, match="one metrics object per registry"):
        ServerMetrics(registry)


def test_wsgi_worker_threads_share_one_metrics_object(
    serve_wsgi: ServeWSGI, registry: CollectorRegistry
) -> None:
    flask = Flask(__name__)
    barrier = threading.Barrier(4, timeout=10)

    @flask.get("/together")
    def together() -> str:
        barrier.wait()  # four requests in flight at once
        return "ok"

    flask.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
        flask.wsgi_app, ServerOptions(observers=[ServerMetrics(registry)])
    )
    base = serve_wsgi(flask)

    async def requests() -> list[int]:
        return await asyncio.gather(*(get(f"{base}/together") for _ in range(4)))

    assert asyncio.run(requests()) == [200] * 4
    assert settled(lambda: value(registry, DURATIONS, **served("GET", "/together", "200")), 4) == 4
