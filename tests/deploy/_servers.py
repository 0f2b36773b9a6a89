"""Small servers the namespace tests start, each in its own namespace.

    python -m tests.deploy._servers http  --host ADDRESS --port PORT
    python -m tests.deploy._servers grpc  --host ADDRESS --port PORT
    python -m tests.deploy._servers front --host ADDRESS --port PORT \
        --backend-url http://ADDRESS:PORT --grpc-target ADDRESS:PORT

``http`` (aiohttp) and ``grpc`` (grpc.aio, the Recommendations proto) say
what a call carried: the deadline the handler inherited from microcall's
server middleware and the caller's address. ``front`` is a service in the
middle: an aiohttp handler behind the same middleware that calls both with a
microcall ``AsyncClient`` and ``AsyncChannel``, under the deadline its own
caller sent, and answers with its own view and theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

import microcall
from microcall.examples_pb.recommendations_pb2 import (
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    RecommendationsStub,
    add_RecommendationsServicer_to_server,
)
from microcall.grpc import AsyncChannel, AsyncServerInterceptor, ChannelOptions
from microcall.server import ServerOptions
from microcall.server.aiohttp import AiohttpMiddleware


def remaining() -> float | None:
    """The inherited deadline's remaining seconds, or None when the call carried none."""
    deadline = microcall.current_deadline()
    return None if deadline is None else deadline.remaining()


async def seen(request: web.Request) -> web.Response:
    return web.json_response({"remaining": remaining(), "peer": request.remote})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class Recommendations(RecommendationsServicer):
    """One book whose title carries what the call brought: the deadline and the peer."""

    async def Recommend(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> RecommendationResponse:
        said = json.dumps({"remaining": remaining(), "peer": context.peer()})
        return RecommendationResponse(recommendations=[BookRecommendation(id=1, title=said)])


def front_app(backend_url: str, grpc_target: str) -> web.Application:
    """The service in the middle: one page that calls the HTTP and the gRPC backend."""
    app = web.Application(middlewares=[AiohttpMiddleware(ServerOptions(default_timeout=30.0))])

    async def start(app: web.Application) -> Any:
        async with (
            microcall.AsyncClient(backend_url) as client,
            # Plaintext: the namespaces stand for hosts on a private network, and
            # microcall picks TLS for any target off this machine unless told.
            AsyncChannel([grpc_target], ChannelOptions(timeout=30.0, insecure=True)) as channel,
        ):
            app["client"], app["stub"] = client, RecommendationsStub(channel)
            yield

    async def page(request: web.Request) -> web.Response:
        mine = remaining()
        over_http = (await request.app["client"].get("/seen")).json()
        reply = await request.app["stub"].Recommend(RecommendationRequest(user_id=1))
        over_grpc = json.loads(reply.recommendations[0].title)
        return web.json_response(
            {"remaining": mine, "peer": request.remote, "http": over_http, "grpc": over_grpc}
        )

    app.cleanup_ctx.append(start)
    app.router.add_get("/page", page)
    app.router.add_get("/healthz", healthz)
    return app


def backend_app() -> web.Application:
    app = web.Application(middlewares=[AiohttpMiddleware(ServerOptions(default_timeout=30.0))])
    app.router.add_get("/seen", seen)
    app.router.add_get("/healthz", healthz)
    return app


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_http(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"listening on {host}:{port}", flush=True)
    try:
        await until_signalled()
    finally:
        await runner.cleanup()


async def serve_grpc(host: str, port: int) -> None:
    server = grpc.aio.server(interceptors=[AsyncServerInterceptor(ServerOptions())])
    add_RecommendationsServicer_to_server(Recommendations(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"listening on {host}:{port}", flush=True)
    try:
        await until_signalled()
    finally:
        await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["http", "grpc", "front"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-url")
    parser.add_argument("--grpc-target")
    arguments = parser.parse_args()
    if arguments.role == "grpc":
        asyncio.run(serve_grpc(arguments.host, arguments.port))
    elif arguments.role == "http":
        asyncio.run(serve_http(backend_app(), arguments.host, arguments.port))
    else:
        app = front_app(arguments.backend_url, arguments.grpc_target)
        asyncio.run(serve_http(app, arguments.host, arguments.port))


if __name__ == "__main__":
    main()
