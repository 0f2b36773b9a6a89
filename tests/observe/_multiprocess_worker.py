"""One worker process of a multiprocess deployment, for test_multiprocess.py.

``python -m tests.observe._multiprocess_worker CALLS`` with
``PROMETHEUS_MULTIPROC_DIR`` set: it serves an aiohttp application behind
microcall's middleware (``ServerMetrics``) with ``/metrics`` on 127.0.0.1,
makes CALLS calls to itself through an ``AsyncClient`` (``ClientMetrics``,
a circuit breaker),
prints its port, and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

import microcall
from microcall.observe.exposition import add_metrics_route
from microcall.observe.prometheus import ClientMetrics, ServerMetrics
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.server import ServerOptions
from microcall.server.aiohttp import AiohttpMiddleware


async def book(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["id"])


async def main(calls: int) -> None:
    app = web.Application(
        middlewares=[AiohttpMiddleware(ServerOptions(observers=[ServerMetrics()]))]
    )
    app.router.add_get("/books/{id}", book)
    add_metrics_route(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with microcall.AsyncClient(
        f"http://127.0.0.1:{port}", observers=[ClientMetrics()], breaker=CircuitBreakerConfig()
    ) as client:
        for number in range(calls):
            response = await client.get(f"/books/{number}")
            assert response.status_code == 200
    print(port, flush=True)
    # Serve until the test closes stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
