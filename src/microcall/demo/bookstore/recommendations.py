"""The Recommendations service: ``python -m microcall.demo.bookstore.recommendations --port P --metrics-port M``.

The gRPC tutorial's service (protos/recommendations.proto: ``Recommend``,
unary, and ``RecommendStream``, server streaming) on grpc.aio behind
microcall's :class:`~microcall.grpc.AsyncServerInterceptor` (the caller's
deadline and priority, expired calls refused, shedding by priority), with
the standard health service and server reflection. Each answer carries, in
its trailing metadata, the deadline this replica received
(``x-seen-deadline``) and the replica's address (``x-replica``).

The metrics port serves HTTP: ``/metrics``, ``/healthz`` and the chaos
switches (``/chaos``: latency, errors as UNAVAILABLE, kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator, Sequence

import grpc
import grpc.aio
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import microcall
from microcall.demo.bookstore import books
from microcall.demo.bookstore._service import (
    arguments,
    chaos_routes,
    setup_tracing,
    shutdown_tracing,
)
from microcall.examples_pb import recommendations_pb2
from microcall.examples_pb.recommendations_pb2 import (
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    add_RecommendationsServicer_to_server,
)
from microcall.grpc import AsyncServerInterceptor
from microcall.observe.exposition import add_metrics_route
from microcall.observe.prometheus import ServerMetrics
from microcall.observe.tracing import ServerTracing
from microcall.server import ServerOptions, Shedding, StaticLimit, trust_networks
from microcall.testing.chaos import Chaos
from microcall.testing.services import SEEN_DEADLINE_METADATA

SERVICE_NAME = "bookstore.Recommendations"
DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9101
# Calls one replica serves at once before it sheds low priority first.
CONCURRENCY_LIMIT = 64

_SHELF: dict[int, list[BookRecommendation]] = {
    recommendations_pb2.BookCategory.Value(category): [
        BookRecommendation(id=book.id, title=book.title) for book in books.by_category(category)
    ]
    for category in books.CATEGORIES
}

ServicerContext = grpc.aio.ServicerContext[RecommendationRequest, object]


class RecommendationService(RecommendationsServicer):
    """Up to ``max_results`` books of the requested category, drawn at random, under chaos."""

    def __init__(self, replica: str, chaos: Chaos, rng: random.Random | None = None) -> None:
        self.replica = replica
        self.chaos = chaos
        self._rng = rng or random.Random()

    def _pick(self, request: RecommendationRequest) -> list[BookRecommendation]:
        shelf = _SHELF.get(request.category, [])
        return self._rng.sample(shelf, min(max(request.max_results, 0), len(shelf)))

    async def _admit(self, method: str, context: ServicerContext) -> None:
        """Echo what this hop saw, then apply the chaos switches."""
        deadline = microcall.current_deadline()
        seen = f"{deadline.remaining():.4f}" if deadline is not None else ""
        context.set_trailing_metadata(((SEEN_DEADLINE_METADATA, seen), ("x-replica", self.replica)))
        fault = self.chaos.fault_for(f"/{SERVICE_NAME}/{method}")
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")

    async def Recommend(
        self,
        request: RecommendationRequest,
        context: grpc.aio.ServicerContext[RecommendationRequest, RecommendationResponse],
    ) -> RecommendationResponse:
        await self._admit("Recommend", context)  # type: ignore[arg-type]
        if request.category not in _SHELF:
            await context.abort(grpc.StatusCode.NOT_FOUND, "category not found")
        return RecommendationResponse(recommendations=self._pick(request))

    async def RecommendStream(
        self,
        request: RecommendationRequest,
        context: grpc.aio.ServicerContext[RecommendationRequest, BookRecommendation],
    ) -> AsyncIterator[BookRecommendation]:
        await self._admit("RecommendStream", context)  # type: ignore[arg-type]
        if request.category not in _SHELF:
            await context.abort(grpc.StatusCode.NOT_FOUND, "category not found")
        for book in self._pick(request):
            deadline = microcall.current_deadline()
            if deadline is not None and deadline.expired():
                return  # nobody is reading any more
            yield book


def server_options() -> ServerOptions:
    """The interceptor's options: metrics, traces, loopback callers trusted, shedding."""
    return ServerOptions(
        default_timeout=5.0,
        shedding=Shedding(limit=StaticLimit(limit=CONCURRENCY_LIMIT)),
        trust=trust_networks("127.0.0.0/8", "::1/128"),
        observers=[ServerMetrics(), ServerTracing()],
    )


async def serve(host: str, port: int, metrics_port: int) -> None:
    """Serve gRPC on ``port`` and HTTP on ``metrics_port`` until SIGINT or SIGTERM."""
    provider = setup_tracing("recommendations")
    chaos = Chaos()
    server = grpc.aio.server(interceptors=[AsyncServerInterceptor(server_options())])
    add_RecommendationsServicer_to_server(RecommendationService(f"{host}:{port}", chaos), server)
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
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)

    app = web.Application()
    add_metrics_route(app)
    app.add_routes(chaos_routes(chaos))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, metrics_port).start()
    print(
        f"Recommendations on {host}:{port} (gRPC), metrics on http://{host}:{metrics_port}",
        flush=True,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await checks.enter_graceful_shutdown()
    await server.stop(1.0)
    await runner.cleanup()
    shutdown_tracing(provider)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve."""
    args = arguments(__doc__.splitlines()[0], DEFAULT_PORT, argv, metrics_port=DEFAULT_METRICS_PORT)
    asyncio.run(serve(args.host, args.port, args.metrics_port))


if __name__ == "__main__":
    main()
