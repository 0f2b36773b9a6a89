"""One deadline across protocols: HTTP (ASGI) -> gRPC (grpc.aio) -> HTTP (aiohttp), all on loopback.

The edge service, an ASGI app under uvicorn, calls Recommendations over gRPC
with microcall's AsyncChannel; Recommendations, behind the grpc.aio
interceptor, calls a catalog over HTTP with microcall's AsyncClient; the
catalog runs aiohttp with microcall's middleware. Each hop reads what is
left of the one deadline the caller set at the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import microcall
from microcall.errors import DeadlineExceeded
from microcall.examples_pb.recommendations_pb2 import (
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    RecommendationsStub,
)
from microcall.grpc import AsyncChannel, AsyncServerInterceptor
from microcall.server import ServerOptions
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from tests.conftest import Serve
from tests.grpc.conftest import ServeGrpc
from tests.server.conftest import ServeASGI

# Each hop works this long before calling the next, so the time left must
# visibly shrink from hop to hop whatever the machine's load.
WORK = 0.03
# grpc-core writes grpc-timeout with three significant digits, rounding up
# (10 ms steps between 1 and 10 s): that much more may reach the gRPC hop.
GRPC_TIMEOUT_STEP = 0.01


@dataclass(slots=True)
class Hops:
    """What each service saw: the deadline left when its handler started."""

    edge: list[float] = field(default_factory=list)
    recommendations: list[float] = field(default_factory=list)
    catalog: list[float] = field(default_factory=list)


def remaining() -> float:
    deadline = microcall.current_deadline()
    assert deadline is not None
    return deadline.remaining()


def catalog_app(hops: Hops) -> web.Application:
    async def book(request: web.Request) -> web.Response:
        hops.catalog.append(remaining())
        return web.json_response({"title": "The Dune Chronicles"})

    app = web.Application(middlewares=[AiohttpMiddleware()])
    app.router.add_get("/books/{id}", book)
    return app


class Recommendations(RecommendationsServicer):
    def __init__(self, hops: Hops, catalog: microcall.AsyncClient) -> None:
        self._hops = hops
        self._catalog = catalog

    async def Recommend(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext
    ) -> RecommendationResponse:
        self._hops.recommendations.append(remaining())
        await asyncio.sleep(WORK)
        book = (await self._catalog.get("/books/6")).json()
        return RecommendationResponse(
            recommendations=[BookRecommendation(id=6, title=book["title"])]
        )


def edge_app(hops: Hops, channel: AsyncChannel, pause: float) -> Starlette:
    stub = RecommendationsStub(channel)

    async def page(request: Request) -> JSONResponse:
        hops.edge.append(remaining())
        await asyncio.sleep(pause)
        try:
            reply = await stub.Recommend(RecommendationRequest(user_id=1, max_results=1))
        except DeadlineExceeded as error:
            return JSONResponse({"error": type(error).__name__}, status_code=504)
        return JSONResponse({"titles": [book.title for book in reply.recommendations]})

    return Starlette(routes=[Route("/", page)])


@pytest.fixture
async def chain(
    serve: Serve, serve_grpc: ServeGrpc, serve_asgi: ServeASGI
) -> AsyncIterator[tuple[Hops, AsyncServerInterceptor, str, str]]:
    """The three services; yields the hops record, the gRPC interceptor, and two edge URLs."""
    hops = Hops()
    catalog_url = await serve(catalog_app(hops))
    async with microcall.AsyncClient(catalog_url) as catalog:
        # The gRPC hop refuses calls with under 400 ms left: too little for its work.
        protect = AsyncServerInterceptor(ServerOptions(floor=0.4))
        target = await serve_grpc(Recommendations(hops, catalog), interceptors=[protect])
        async with AsyncChannel(target) as channel:
            prompt = await serve_asgi(ASGIMiddleware(edge_app(hops, channel, WORK)))
            slow = await serve_asgi(ASGIMiddleware(edge_app(hops, channel, 0.75)))
            yield hops, protect, prompt, slow


async def test_the_time_left_shrinks_at_every_hop(
    chain: tuple[Hops, AsyncServerInterceptor, str, str],
) -> None:
    hops, _, edge, _ = chain
    async with microcall.AsyncClient(edge, timeout=2.0) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"titles": ["The Dune Chronicles"]}
    (edge_left,), (grpc_left,), (catalog_left,) = hops.edge, hops.recommendations, hops.catalog
    assert 2.0 >= edge_left > grpc_left > catalog_left > 0
    assert edge_left - catalog_left >= 2 * WORK - GRPC_TIMEOUT_STEP


async def test_an_expired_call_is_refused_where_it_arrives(
    chain: tuple[Hops, AsyncServerInterceptor, str, str],
) -> None:
    hops, protect, _, slow_edge = chain
    # The edge spends 0.75 s of the caller's 1 s before calling Recommendations,
    # which then arrives with about 0.25 s left, under that hop's 0.4 s floor.
    async with microcall.AsyncClient(slow_edge, timeout=1.0) as client:
        response = await client.get("/")
    assert response.status_code == 504
    assert response.json() == {"error": "DeadlineExceeded"}
    assert len(hops.edge) == 1
    assert hops.recommendations == []  # refused before its handler ran
    assert hops.catalog == []
    assert protect.stats.expired == 1
