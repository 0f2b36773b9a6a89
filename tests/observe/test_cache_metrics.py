"""Cache answers are counted by ClientMetrics when the client has a cache."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

import microcall
from microcall.cache import MemoryBackend, ResponseCache
from microcall.observe.prometheus import ClientMetrics
from tests.conftest import Serve


async def test_hits_and_misses_are_counted(serve: Serve) -> None:
    async def book(request: web.Request) -> web.Response:
        return web.json_response({"id": 1}, headers={"Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/books/1", book)
    base = await serve(app)
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    cache = ResponseCache(MemoryBackend())
    async with microcall.AsyncClient(base, cache=cache, observers=[metrics]) as client:
        for _ in range(3):
            await client.get("/books/1")

    def count(status: str) -> float | None:
        return registry.get_sample_value(
            "microcall_client_cache_lookups_total",
            {"http_request_method": "GET", "status": status},
        )

    assert count("miss") == 1
    assert count("hit") == 2
