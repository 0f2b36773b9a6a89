"""Three hops across three frameworks: client -> FastAPI (ASGI) -> Flask (WSGI) -> aiohttp.

Each hop does a little work, then calls the next with a microcall client of
its own kind (AsyncClient in the async endpoint, the blocking Client in the
Flask worker thread). None of them passes a timeout or a priority: what
arrives downstream is what the middleware restored upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from fastapi import FastAPI
from flask import Flask, Response, jsonify

import microcall
from microcall.server import ServerOptions, trust_networks
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware
from tests.conftest import Serve
from tests.server.conftest import ServeASGI, ServeWSGI

TRUSTING = ServerOptions(trust=trust_networks("127.0.0.0/8"))
WORK = 0.02  # each hop spends this long before calling the next


def here(hop: str) -> dict[str, Any]:
    deadline = microcall.current_deadline()
    priority = microcall.current_priority()
    assert deadline is not None
    assert priority is not None
    return {"hop": hop, "remaining": deadline.remaining(), "priority": priority.value}


@pytest.fixture
def blocking_clients() -> Iterator[list[microcall.Client]]:
    clients: list[microcall.Client] = []
    yield clients
    for client in clients:
        client.close()


async def start_chain(
    serve: Serve,
    serve_asgi: ServeASGI,
    serve_wsgi: ServeWSGI,
    blocking_clients: list[microcall.Client],
    middle: ServerOptions,
) -> tuple[str, AiohttpMiddleware]:
    async def last(request: web.Request) -> web.Response:
        return web.json_response(here("aiohttp"))

    tail_gate = AiohttpMiddleware(TRUSTING)
    tail = web.Application(middlewares=[tail_gate])
    tail.router.add_get("/", last)
    tail_url = await serve(tail)

    to_tail = microcall.Client(tail_url)
    blocking_clients.append(to_tail)
    flask = Flask(__name__)

    @flask.get("/")
    def middle_hop() -> Response:
        seen = here("wsgi")
        time.sleep(WORK)
        return jsonify({**seen, "next": to_tail.get("/").raise_for_status().json()})

    flask.wsgi_app = WSGIMiddleware(flask.wsgi_app, middle)  # type: ignore[method-assign]
    middle_url = serve_wsgi(flask)

    to_middle = microcall.AsyncClient(middle_url)
    front = FastAPI()
    front.add_middleware(ASGIMiddleware, options=TRUSTING)

    @front.get("/")
    async def first_hop() -> dict[str, Any]:
        seen = here("asgi")
        await asyncio.sleep(WORK)
        response = await to_middle.get("/")
        return {**seen, "next": response.raise_for_status().json()}

    return await serve_asgi(front), tail_gate


def hops(answer: dict[str, Any]) -> list[dict[str, Any]]:
    chain = []
    while answer:
        chain.append(answer)
        answer = answer.get("next", {})
    return chain


async def test_the_deadline_shrinks_and_the_priority_travels_across_three_frameworks(
    serve: Serve,
    serve_asgi: ServeASGI,
    serve_wsgi: ServeWSGI,
    blocking_clients: list[microcall.Client],
) -> None:
    front, _ = await start_chain(serve, serve_asgi, serve_wsgi, blocking_clients, TRUSTING)
    async with microcall.AsyncClient(front) as client:
        for priority in ("high", "low"):
            response = await client.get("/", timeout=5.0, priority=priority)
            chain = hops(response.raise_for_status().json())
            assert [hop["hop"] for hop in chain] == ["asgi", "wsgi", "aiohttp"]
            remaining = [hop["remaining"] for hop in chain]
            assert 5.0 >= remaining[0] > remaining[1] > remaining[2] > 0.0
            # Each hop sees at least the upstream hop's work fewer seconds.
            assert remaining[0] - remaining[2] >= 2 * WORK - 0.002
            assert [hop["priority"] for hop in chain] == [priority] * 3


async def test_a_hop_that_does_not_trust_its_caller_caps_priority_for_everything_after(
    serve: Serve,
    serve_asgi: ServeASGI,
    serve_wsgi: ServeWSGI,
    blocking_clients: list[microcall.Client],
) -> None:
    front, _ = await start_chain(serve, serve_asgi, serve_wsgi, blocking_clients, ServerOptions())
    async with microcall.AsyncClient(front) as client:
        chain = hops((await client.get("/", timeout=5.0, priority="high")).json())
    assert [hop["priority"] for hop in chain] == ["high", "normal", "normal"]


async def test_an_outer_deadline_too_short_for_the_chain_ends_it_early(
    serve: Serve,
    serve_asgi: ServeASGI,
    serve_wsgi: ServeWSGI,
    blocking_clients: list[microcall.Client],
) -> None:
    front, tail = await start_chain(serve, serve_asgi, serve_wsgi, blocking_clients, TRUSTING)
    async with microcall.AsyncClient(front) as client:
        # 30 ms: the first hop spends 20 of them, the second another 20, and
        # by then nothing is left to call the third with.
        try:
            answer = await client.get("/", timeout=0.03)
        except microcall.DeadlineExceeded:
            pass
        else:
            # The front hop's handler ran out of the same deadline first and
            # answered as for expired work, in time to reach us.
            assert answer.status_code == 408
            assert answer.headers["X-Do-Not-Retry"] == "1"
    await asyncio.sleep(4 * WORK)  # let the abandoned hops finish what they started
    assert tail.stats.admitted == 0
    assert tail.stats.expired == 0  # not sent at all: the Client saw the deadline pass
