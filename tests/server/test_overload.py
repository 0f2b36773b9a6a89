"""Shedding order under an overload built step by step: limit 10, requests held open.

Low priority alone fills the whole limit (half of it inside its guarantee,
half borrowed). Normal, then high, get in over the limit, up to their own
guarantees (80% for normal with high), until twice the limit is in flight;
then every newcomer is refused at once. Each step holds its requests open on
an event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from fastapi import FastAPI
from flask import Flask

import microcall
from microcall.server import ServerOptions, ServerStats, Shedding, StaticLimit, trust_all
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware
from tests.conftest import Serve
from tests.server._waiting import eventually
from tests.server.conftest import ServeASGI, ServeWSGI

OPTIONS = ServerOptions(trust=trust_all, shedding=Shedding(limit=StaticLimit(limit=10)))


class Held:
    """Counts handlers that entered and lets them all go at once (from any thread)."""

    def __init__(self) -> None:
        self.entered = 0
        self._lock = threading.Lock()
        self.gate = threading.Event()

    def enter(self) -> None:
        with self._lock:
            self.entered += 1

    async def until(self, count: int) -> None:
        await eventually(lambda: self.entered >= count)

    async def wait_async(self) -> None:
        self.enter()
        await eventually(self.gate.is_set)


async def overload(base: str, held: Held, stats: Callable[[], ServerStats]) -> None:
    async with aiohttp.ClientSession() as session:

        async def call(priority: str) -> tuple[int, str | None]:
            headers = {"X-Request-Priority": priority, "X-Request-Timeout": "20"}
            async with session.get(base + "/hold", headers=headers) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")

        running: list[asyncio.Task[tuple[int, str | None]]] = []

        async def hold(priority: str, count: int, total: int) -> None:
            running.extend(asyncio.create_task(call(priority)) for _ in range(count))
            await held.until(total)

        await hold("low", 10, 10)  # no one else wants the capacity: low borrows it all
        assert await call("low") == (503, "1")
        await hold("normal", 8, 18)  # over the limit: its guarantee ignores low
        assert await call("low") == (503, "1")
        assert await call("normal") == (503, "1")
        await hold("high", 2, 20)  # twice the limit: the bound on any overrun
        for priority in ("low", "normal", "high"):
            assert (await call(priority))[0] == 503
        assert held.entered == 20

        held.gate.set()
        finished = await asyncio.gather(*running)
        assert [status for status, _ in finished] == [200] * 20
        counts = stats().snapshot()
        assert (counts["shed_low"], counts["shed_normal"], counts["shed_high"]) == (3, 2, 1)
        assert counts["admitted"] == 20
        # Once the work drains, every priority gets in again. (A server may
        # free a slot just after its response left, hence a few tries.)
        for priority in ("low", "normal", "high"):
            for _ in range(100):
                if (await call(priority))[0] == 200:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"{priority} still refused once idle")


async def test_aiohttp_sheds_low_then_normal_then_high(serve: Serve) -> None:
    held = Held()

    async def hold(request: web.Request) -> web.Response:
        await held.wait_async()
        return web.Response(text="ok")

    protect = AiohttpMiddleware(OPTIONS)
    app = web.Application(middlewares=[protect])
    app.router.add_get("/hold", hold)
    await overload(await serve(app), held, lambda: protect.stats)
    assert protect.limiter is not None
    assert protect.limiter.inflight == 0


async def test_asgi_sheds_low_then_normal_then_high(serve_asgi: ServeASGI) -> None:
    held = Held()
    stats = ServerStats()
    app = FastAPI()
    app.add_middleware(ASGIMiddleware, options=OPTIONS, stats=stats)

    @app.get("/hold")
    async def hold() -> dict[str, Any]:
        await held.wait_async()
        return {}

    await overload(await serve_asgi(app), held, lambda: stats)


async def test_wsgi_sheds_low_then_normal_then_high(serve_wsgi: ServeWSGI) -> None:
    held = Held()
    flask = Flask(__name__)

    @flask.get("/hold")
    def hold() -> str:
        held.enter()
        held.gate.wait(10)
        return "ok"

    protect = WSGIMiddleware(flask.wsgi_app, OPTIONS)
    flask.wsgi_app = protect  # type: ignore[method-assign]
    await overload(serve_wsgi(flask), held, lambda: protect.stats)
    limiter = protect.limiter
    assert limiter is not None
    # The server closes the response (freeing the slot) just after sending it.
    await eventually(lambda: limiter.inflight == 0)


async def test_microcall_honours_retry_after_within_its_deadline(serve: Serve) -> None:
    # One slot, held: a retrying client is refused, waits the second the
    # server asks for, and gets in once the slot is free.
    gate = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="ok")

    protect = AiohttpMiddleware(ServerOptions(shedding=Shedding(limit=StaticLimit(limit=1))))
    app = web.Application(middlewares=[protect])
    app.router.add_get("/hold", hold)
    base = await serve(app)
    async with microcall.AsyncClient(base, timeout=10.0) as client:
        first = asyncio.create_task(client.get("/hold"))
        await eventually(lambda: protect.stats.admitted == 1)
        second = asyncio.create_task(client.get("/hold", strategy=microcall.retry(3)))
        await eventually(lambda: protect.stats.shed == 1)
        gate.set()
        assert (await first).status_code == 200
        response = await second
    assert response.status_code == 200
    assert [attempt.status for attempt in response.attempts] == [503, 200]
