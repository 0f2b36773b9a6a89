"""Hostile input does not grow the number of series: paths, query strings, headers and methods.

Every request carries a path, a query string and header values never seen
before (and some an odd method); the metrics keep the same series they had
after the first few requests. The aiohttp middleware takes 10,000 of them
over loopback; a microcall client sends 1,000 such calls, and the ASGI and
WSGI middleware (whose route templates come from elsewhere) take 500 between
them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from fastapi import FastAPI
from flask import Flask
from prometheus_client import CollectorRegistry

import microcall
from microcall.observe.prometheus import ClientMetrics, ServerMetrics
from microcall.server import ServerOptions
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware
from tests.conftest import Serve
from tests.observe._metrics import label_values, series
from tests.server.conftest import ServeASGI, ServeWSGI

# Methods the HTTP parsers accept but OpenTelemetry's list does not name.
ODD_METHODS = ("PROPFIND", "MKCOL", "LOCK", "SEARCH", "PURGE")
FAMILIES = (
    "http_server_request_duration_seconds",
    "http_server_active_requests",
    "http_client_request_duration_seconds",
    "microcall_client_attempt_duration_seconds",
    "microcall_client_attempts",
    "http_client_active_requests",
    "microcall_server_expired",
)


def hostile(number: int) -> tuple[str, str, dict[str, str]]:
    """A method, a path with a query string and headers no request before had."""
    method = ODD_METHODS[number % len(ODD_METHODS)] if number % 7 == 0 else "GET"
    path = f"/items/{number}?session={number}&q={'x' * (number % 50)}"
    if number % 3 == 0:
        path = f"/no/such/thing/{number}/{number * 7}?token={number}"
    headers = {
        "X-Request-Id": f"req-{number}",
        "User-Agent": f"scanner/{number}",
        "Cookie": f"session={number}",
        "X-Request-Priority": f"urgent-{number}",
        "X-Request-Timeout": "0" if number % 11 == 0 else f"{1 + number % 97}.{number}",
    }
    return method, path, headers


def count_series(registry: CollectorRegistry) -> int:
    return sum(len(series(registry, family)) for family in FAMILIES)


async def flood(
    send: Callable[[int], Awaitable[None]], total: int, registry: CollectorRegistry
) -> list[int]:
    """Send ``total`` hostile requests, 32 at a time; the series count after each tenth."""
    numbers = itertools.count()
    counts: list[int] = []

    async def worker() -> None:
        for number in numbers:
            if number >= total:
                return
            await send(number)
            if number % (total // 10) == 0:
                counts.append(count_series(registry))

    await asyncio.gather(*(worker() for _ in range(32)))
    counts.append(count_series(registry))
    return counts


async def items_server(serve: Serve, registry: CollectorRegistry) -> str:
    async def item(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(
        middlewares=[AiohttpMiddleware(ServerOptions(observers=[ServerMetrics(registry)]))]
    )
    app.router.add_route("*", "/items/{id}", item)
    return await serve(app)


async def test_ten_thousand_hostile_requests_to_aiohttp(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await items_server(serve, registry)
    host, port = base.removeprefix("http://").split(":")
    # Plain keep-alive connections, one per worker: a full HTTP client would
    # spend more time here than the server being measured.
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(number: int) -> None:
        method, path, headers = hostile(number)
        reader, writer = idle.pop() if idle else await asyncio.open_connection(host, int(port))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Length: 0"]
        lines += [f"{name}: {text}" for name, text in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        idle.append((reader, writer))

    # Warm up: every kind of request (method, matched or not, expired) once.
    for number in range(80):
        await send(number)
    before = count_series(registry)
    counts = await flood(send, 10_000, registry)
    for _, writer in idle:
        writer.close()

    assert set(counts) == {before}
    assert label_values(registry, "http_server_request_duration_seconds", "http_route") == {
        "/items/{id}",
        "_OTHER",
    }
    assert label_values(
        registry, "http_server_request_duration_seconds", "http_request_method"
    ) == {
        "GET",
        "_OTHER",
    }


async def test_a_thousand_hostile_calls_from_a_microcall_client(
    serve: Serve, registry: CollectorRegistry
) -> None:
    base = await items_server(serve, CollectorRegistry())
    async with microcall.AsyncClient(base, observers=[ClientMetrics(registry)]) as client:

        async def send(number: int) -> None:
            method, path, headers = hostile(number)
            await client.request(method, path, headers=headers)

        for number in range(80):
            await send(number)
        before = count_series(registry)
        counts = await flood(send, 1_000, registry)

    assert set(counts) == {before}
    assert label_values(registry, "http_client_request_duration_seconds", "server_address") == {
        "127.0.0.1"
    }
    assert label_values(
        registry, "http_client_request_duration_seconds", "http_request_method"
    ) == {
        "GET",
        "_OTHER",
    }


async def test_hostile_requests_through_asgi_and_wsgi(
    serve_asgi: ServeASGI, serve_wsgi: ServeWSGI, registry: CollectorRegistry
) -> None:
    options = ServerOptions(observers=[ServerMetrics(registry)])
    api = FastAPI()

    @api.api_route("/items/{item_id}", methods=["GET", *ODD_METHODS])
    async def item(item_id: str) -> str:
        return "ok"

    api.add_middleware(ASGIMiddleware, options=options)
    flask = Flask(__name__)

    @flask.route("/items/<item_id>", methods=["GET", *ODD_METHODS])
    def flask_item(item_id: str) -> str:
        return "ok"

    flask.wsgi_app = WSGIMiddleware(flask.wsgi_app, options)  # type: ignore[method-assign]
    bases = (await serve_asgi(api), serve_wsgi(flask))

    async with aiohttp.ClientSession() as session:

        async def send(number: int) -> None:
            method, path, headers = hostile(number)
            async with session.request(method, bases[number % 2] + path, headers=headers) as r:
                await r.read()

        for number in range(80):
            await send(number)
        await asyncio.sleep(0.2)  # the WSGI server closes its last responses
        before = count_series(registry)
        counts = await flood(send, 500, registry)

    assert set(counts) == {before}
    assert label_values(registry, "http_server_request_duration_seconds", "http_route") == {
        "/items/{item_id}",
        "/items/<item_id>",
        "_OTHER",
    }
