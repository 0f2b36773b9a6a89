"""The Recommendations service on grpc.aio, with microcall's interceptor and the health service.

Run it from the repository root::

    python -m examples.recommendations.server --address 127.0.0.1:50051

Every call is admitted by :class:`microcall.grpc.AsyncServerInterceptor`:
the caller's deadline and priority become the handler's context (any call
it makes downstream inherits them), an expired call is refused with
DEADLINE_EXCEEDED, and with ``--limit`` calls over the concurrency limit are
shed by priority with RESOURCE_EXHAUSTED. The standard health service
(``grpc.health.v1.Health``) answers SERVING for the whole server and for
``bookstore.Recommendations`` until shutdown. The server offers gRPC
reflection (grpcio-reflection), so tools that read the schema from the
server, such as ``microcall grpc`` and grpcurl, call it with no .proto at hand::

    microcall grpc 127.0.0.1:50051 bookstore.Recommendations/Recommend \
        '{"user_id": 1, "category": "MYSTERY", "max_results": 2}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import microcall
from microcall.examples_pb import recommendations_pb2
from microcall.examples_pb.recommendations_pb2 import (
    MYSTERY,
    SCIENCE_FICTION,
    SELF_HELP,
    BookCategory,
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    add_RecommendationsServicer_to_server,
)
from microcall.grpc import AsyncServerInterceptor
from microcall.server import ServerOptions, Shedding, StaticLimit, trust_networks

SERVICE_NAME = "bookstore.Recommendations"

BOOKS: dict[BookCategory.ValueType, list[BookRecommendation]] = {
    MYSTERY: [
        BookRecommendation(id=1, title="The Maltese Falcon"),
        BookRecommendation(id=2, title="Murder on the Orient Express"),
        BookRecommendation(id=3, title="The Hound of the Baskervilles"),
    ],
    SCIENCE_FICTION: [
        BookRecommendation(id=4, title="The Hitchhiker's Guide to the Galaxy"),
        BookRecommendation(id=5, title="Ender's Game"),
        BookRecommendation(id=6, title="The Dune Chronicles"),
    ],
    SELF_HELP: [
        BookRecommendation(id=7, title="The 7 Habits of Highly Effective People"),
        BookRecommendation(id=8, title="How to Win Friends and Influence People"),
        BookRecommendation(id=9, title="Man's Search for Meaning"),
    ],
}


class RecommendationService(RecommendationsServicer):
    """Up to ``max_results`` books of the requested category, drawn at random."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def _pick(self, request: RecommendationRequest) -> list[BookRecommendation]:
        books = BOOKS.get(request.category)
        if books is None:
            return []
        return self._rng.sample(books, min(max(request.max_results, 0), len(books)))

    async def Recommend(
        self,
        request: RecommendationRequest,
        context: grpc.aio.ServicerContext[RecommendationRequest, RecommendationResponse],
    ) -> RecommendationResponse:
        if request.category not in BOOKS:
            await context.abort(grpc.StatusCode.NOT_FOUND, "category not found")
        return RecommendationResponse(recommendations=self._pick(request))

    async def RecommendStream(
        self,
        request: RecommendationRequest,
        context: grpc.aio.ServicerContext[RecommendationRequest, BookRecommendation],
    ) -> AsyncIterator[BookRecommendation]:
        if request.category not in BOOKS:
            await context.abort(grpc.StatusCode.NOT_FOUND, "category not found")
        for book in self._pick(request):
            deadline = microcall.current_deadline()
            if deadline is not None and deadline.expired():
                return  # nobody is reading any more
            yield book


@dataclass(slots=True)
class RunningServer:
    """A started server: its port, its interceptor (for the counters) and its health."""

    server: grpc.aio.Server
    port: int
    interceptor: AsyncServerInterceptor
    health: health.aio.HealthServicer

    async def stop(self, grace: float | None = 1.0) -> None:
        """Say NOT_SERVING, then stop (calls in flight get ``grace`` seconds)."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start(
    address: str = "127.0.0.1:0",
    options: ServerOptions | None = None,
    service: RecommendationsServicer | None = None,
) -> RunningServer:
    """Start the service on ``address`` (port 0: any free port) and return it running."""
    interceptor = AsyncServerInterceptor(options)
    server = grpc.aio.server(interceptors=[interceptor])
    add_RecommendationsServicer_to_server(service or RecommendationService(), server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    reflection.enable_server_reflection(
        (
            recommendations_pb2.DESCRIPTOR.services_by_name["Recommendations"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    await server.start()
    for name in ("", SERVICE_NAME):
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, interceptor, checks)


async def serve(address: str, options: ServerOptions) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    running = await start(address, options)
    host = address.rpartition(":")[0]
    print(f"Recommendations listening on {host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    print(f"served {running.interceptor.stats}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--timeout", type=float, default=5.0, help="default server deadline")
    parser.add_argument("--limit", type=int, default=0, help="concurrency limit (0: none)")
    arguments = parser.parse_args()
    shedding = Shedding(limit=StaticLimit(limit=arguments.limit)) if arguments.limit else None
    options = ServerOptions(
        default_timeout=arguments.timeout,
        shedding=shedding,
        # Callers on this machine may ask for high priority; anyone else is capped at normal.
        trust=trust_networks("127.0.0.0/8", "::1/128"),
    )
    asyncio.run(serve(arguments.address, options))


if __name__ == "__main__":
    main()
