"""Metrics and traces for gRPC calls: the client adapter, the interceptors, one trace across protocols.

The chain: a client -> an ASGI edge (uvicorn) -> Recommendations over gRPC
(grpc.aio, microcall's interceptor) -> a catalog over HTTP (aiohttp, microcall's
middleware). Every hop traces with its own observers and the trace must be one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import microcall
from microcall.errors import GrpcStatusError
from microcall.examples_pb.recommendations_pb2 import (
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    RecommendationsStub,
)
from microcall.grpc import (
    AsyncChannel,
    AsyncServerInterceptor,
    Channel,
    ChannelOptions,
    ObserverAdapter,
    ServerInterceptor,
)
from microcall.observe import ServerObserver, _grpc_metrics
from microcall.observe.prometheus import ClientMetrics, ServerMetrics
from microcall.observe.tracing import ClientTracing, ServerTracing
from microcall.server import ServerOptions
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from tests.conftest import Serve
from tests.grpc.conftest import Backend, BlockingBackend, ServeBlocking, ServeGrpc, Step
from tests.observe._metrics import label_values, series, value
from tests.server._waiting import eventually
from tests.server.conftest import ServeASGI

REQUEST = RecommendationRequest(user_id=1, max_results=1)
METHOD = "/bookstore.Recommendations/Recommend"
SECRET = "Bearer s3cr3t-t0ken"
QUICK_RETRY = microcall.retry(3, backoff=microcall.Backoff(base=0.001, cap=0.002))


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, count: int, timeout: float = 10.0) -> list[ReadableSpan]:
        """The finished spans, once there are ``count`` of them."""
        give_up = time.monotonic() + timeout
        found = list(self.exporter.get_finished_spans())
        while len(found) < count and time.monotonic() < give_up:
            time.sleep(0.005)
            found = list(self.exporter.get_finished_spans())
        return found

    def client(self) -> ClientTracing:
        return ClientTracing(self.provider)

    def server(self) -> ServerOptions:
        return ServerOptions(observers=[ServerTracing(self.provider)])


@pytest.fixture
def traces() -> Iterator[Traces]:
    found = Traces()
    yield found
    found.provider.shutdown()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


class Recommendations(RecommendationsServicer):
    def __init__(self, catalog: microcall.AsyncClient) -> None:
        self._catalog = catalog

    async def Recommend(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> RecommendationResponse:
        book = (await self._catalog.get("/books/6")).json()
        return RecommendationResponse(
            recommendations=[BookRecommendation(id=6, title=book["title"])]
        )


async def test_one_trace_across_http_and_grpc(
    serve: Serve, serve_grpc: ServeGrpc, serve_asgi: ServeASGI, traces: Traces
) -> None:
    """client -> ASGI -> gRPC -> aiohttp: ten spans, one trace, each parent right."""

    async def book(request: web.Request) -> web.Response:
        return web.json_response({"title": "The Dune Chronicles"})

    catalog_app = web.Application(middlewares=[AiohttpMiddleware(traces.server())])
    catalog_app.router.add_get("/books/{id}", book)
    catalog_url = await serve(catalog_app)

    async with microcall.AsyncClient(catalog_url, observers=[traces.client()]) as catalog:
        protect = AsyncServerInterceptor(traces.server())
        target = await serve_grpc(Recommendations(catalog), interceptors=[protect])
        async with AsyncChannel(target, observers=[ObserverAdapter(traces.client())]) as channel:
            stub = RecommendationsStub(channel)

            async def page(request: Request) -> JSONResponse:
                reply = await stub.Recommend(REQUEST, metadata=(("authorization", SECRET),))
                return JSONResponse({"titles": [b.title for b in reply.recommendations]})

            edge = ASGIMiddleware(Starlette(routes=[Route("/", page)]), traces.server())
            edge_url = await serve_asgi(edge)
            async with microcall.AsyncClient(edge_url, observers=[traces.client()]) as client:
                with traces.provider.get_tracer("test").start_as_current_span("user action"):
                    answer = (await client.get("/")).json()
    assert answer == {"titles": ["The Dune Chronicles"]}

    spans = traces.spans(10)
    assert len(spans) == 10
    assert len({trace_id(span) for span in spans}) == 1
    ids = {span_id(span): span for span in spans}

    def chain_up(span: ReadableSpan) -> list[str]:
        names = [f"{span.kind.name}:{span.name}"]
        while span.parent is not None:
            span = ids[span.parent.span_id]
            names.append(f"{span.kind.name}:{span.name}")
        return names

    catalog_span = next(s for s in spans if s.name == "GET /books/{id}")
    assert chain_up(catalog_span) == [
        "SERVER:GET /books/{id}",
        "CLIENT:GET",  # attempt
        "INTERNAL:GET",  # call, from the gRPC handler
        "SERVER:bookstore.Recommendations/Recommend",
        "CLIENT:bookstore.Recommendations/Recommend",  # attempt: its traceparent went as metadata
        "CLIENT:bookstore.Recommendations/Recommend",  # call, from the ASGI endpoint
        "SERVER:GET /",
        "CLIENT:GET",  # attempt
        "INTERNAL:GET",  # call
        "INTERNAL:user action",
    ]
    rpc = [s for s in spans if s.name == "bookstore.Recommendations/Recommend"]
    served = next(s for s in rpc if s.kind is SpanKind.SERVER)
    call, attempt = sorted(
        (s for s in rpc if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )
    assert attributes(call)["rpc.system"] == "grpc"
    assert attributes(call)["rpc.service"] == "bookstore.Recommendations"
    assert attributes(call)["rpc.method"] == "Recommend"
    assert attributes(call)["rpc.grpc.status_code"] == 0
    assert attributes(attempt)["rpc.grpc.status_code"] == 0
    assert attributes(attempt)["server.address"] == "127.0.0.1"
    assert attributes(served)["rpc.grpc.status_code"] == 0
    assert not any(SECRET in repr(attributes(span)) for span in spans)


async def test_retries_are_child_spans_with_their_resend_count(
    serve_grpc: ServeGrpc, traces: Traces
) -> None:
    backend = Backend([Step(code=grpc.StatusCode.UNAVAILABLE), Step()])
    target = await serve_grpc(backend, interceptors=[AsyncServerInterceptor(traces.server())])
    options = ChannelOptions(strategy=QUICK_RETRY)
    async with AsyncChannel(target, options, observers=[ObserverAdapter(traces.client())]) as ch:
        await RecommendationsStub(ch).Recommend(REQUEST, idempotent=True)  # type: ignore[call-arg]
    spans = traces.spans(5)
    clients = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )
    call, first, retry = clients
    assert first.parent is not None
    assert first.parent.span_id == span_id(call)
    assert retry.parent is not None
    assert retry.parent.span_id == span_id(call)
    assert attributes(first)["rpc.grpc.status_code"] == 14
    assert first.status.status_code is StatusCode.ERROR
    assert attributes(retry)["http.request.resend_count"] == 1
    assert attributes(retry)["microcall.attempt.kind"] == "retry"
    assert attributes(call)["microcall.attempts"] == 2
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert {parent.span_id for s in servers if (parent := s.parent) is not None} == {
        span_id(first),
        span_id(retry),
    }


async def test_grpc_calls_land_in_the_rpc_duration_families(
    serve_grpc: ServeGrpc, registry: CollectorRegistry, traces: Traces
) -> None:
    backend = Backend([Step(), Step(code=grpc.StatusCode.NOT_FOUND, details="no such user")])
    options = ServerOptions(observers=[ServerMetrics(registry), ServerTracing(traces.provider)])
    target = await serve_grpc(backend, interceptors=[AsyncServerInterceptor(options)])
    metrics = ClientMetrics(registry)
    observers = [ObserverAdapter(metrics), ObserverAdapter(traces.client())]
    host, port = target.split(":")
    async with AsyncChannel(target, observers=observers) as channel:
        stub = RecommendationsStub(channel)
        credentials = (("authorization", SECRET), ("x-api-key", SECRET))
        await stub.Recommend(REQUEST, metadata=credentials)
        with pytest.raises(GrpcStatusError):
            await stub.Recommend(REQUEST, metadata=credentials)

    client = "rpc_client_call_duration_seconds_count"
    common = {"rpc_system": "grpc", "rpc_service": "bookstore.Recommendations"}
    ok = {**common, "rpc_method": "Recommend", "server_address": host, "server_port": port}
    assert value(registry, client, **ok, rpc_grpc_status_code="0", error_type="") == 1
    assert (
        value(
            registry,
            client,
            **ok,
            rpc_grpc_status_code="5",
            error_type="GrpcStatusError",
        )
        == 1
    )
    server = "rpc_server_call_duration_seconds_count"
    assert value(registry, server, **common, rpc_method="Recommend", rpc_grpc_status_code="0") == 1
    # grpc.aio's abort() sends the status before the interceptor hears of it:
    # the server's record of the failed call may land just after the answer.
    await eventually(
        lambda: (
            value(registry, server, **common, rpc_method="Recommend", rpc_grpc_status_code="5") == 1
        )
    )
    assert value(registry, "rpc_server_active_calls", rpc_system="grpc") == 0
    attempts = "microcall_client_attempts_total"
    assert value(registry, attempts, http_request_method="POST", server_address=host,
                 server_port=port, attempt_kind="first") == 2  # fmt: skip

    exposition = generate_latest(registry).decode()
    assert "s3cr3t" not in exposition
    spans = traces.spans(6)
    for span in spans:
        assert "s3cr3t" not in repr(attributes(span)) + span.name
        assert all("s3cr3t" not in repr(dict(event.attributes or {})) for event in span.events)


async def test_unknown_methods_grow_no_series(
    serve_grpc: ServeGrpc, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanner's made-up methods, on the server and through a forwarding client."""
    monkeypatch.setattr(_grpc_metrics, "MAX_RPC_METHODS", 2)
    options = ServerOptions(observers=[ServerMetrics(registry)])
    target = await serve_grpc(Backend(), interceptors=[AsyncServerInterceptor(options)])
    async with AsyncChannel(target, observers=[ObserverAdapter(ClientMetrics(registry))]) as ch:
        await RecommendationsStub(ch).Recommend(REQUEST)
        for number in range(40):
            made_up = ch.unary_unary(f"/scan{number}.Service/Method{number}")
            with pytest.raises(GrpcStatusError):
                await made_up(b"")

    # The last refusal's record may land just after its status (see above).
    await eventually(
        lambda: (
            value(
                registry,
                "rpc_server_call_duration_seconds_count",
                rpc_system="grpc",
                rpc_service="_OTHER",
                rpc_method="_OTHER",
                rpc_grpc_status_code="12",
            )
            == 40
        )
    )
    server_methods = label_values(registry, "rpc_server_call_duration_seconds", "rpc_method")
    assert server_methods == {"Recommend", "_OTHER"}
    client_series = series(registry, "rpc_client_call_duration_seconds")
    assert len(client_series) <= 3  # Recommend, one made-up method under the cap, _OTHER
    assert "_OTHER" in label_values(registry, "rpc_client_call_duration_seconds", "rpc_method")


class _CatchAll(grpc.GenericRpcHandler):
    """Serves any method name, as a generic proxy or gateway does."""

    def service(self, details: Any) -> Any:
        async def echo(request: bytes, context: Any) -> bytes:
            return request

        return grpc.unary_unary_rpc_method_handler(echo)


async def test_a_catch_all_server_grows_no_series_past_the_bound(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name it is sent reaches a handler: the bound, not the server's methods, holds the labels."""
    monkeypatch.setattr(_grpc_metrics, "MAX_RPC_METHODS", 2)
    options = ServerOptions(observers=[ServerMetrics(registry)])
    server = grpc.aio.server(interceptors=[AsyncServerInterceptor(options)])
    server.add_generic_rpc_handlers([_CatchAll()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for number in range(20):
                assert await channel.unary_unary(f"/scan{number}.Service/Method")(b"x") == b"x"
    finally:
        await server.stop(None)
    await eventually(
        lambda: (
            value(registry, "rpc_server_call_duration_seconds_count", rpc_system="grpc",
                  rpc_service="_OTHER", rpc_method="_OTHER", rpc_grpc_status_code="0")
            == 18
        )
    )  # fmt: skip
    services = label_values(registry, "rpc_server_call_duration_seconds", "rpc_service")
    assert services == {"scan0.Service", "scan1.Service", "_OTHER"}


def test_the_blocking_interceptor_reports_calls_and_refusals(
    serve_blocking_grpc: ServeBlocking, registry: CollectorRegistry, traces: Traces
) -> None:
    observers: list[ServerObserver] = [ServerMetrics(registry), ServerTracing(traces.provider)]
    # Calls arriving with under 5 s left are refused as expired.
    protect = ServerInterceptor(ServerOptions(floor=5.0, observers=observers))
    target = serve_blocking_grpc(BlockingBackend(), interceptors=[protect])
    tracing = ObserverAdapter(traces.client())
    with Channel(target, ChannelOptions(timeout=2.0), observers=[tracing]) as channel:
        stub = RecommendationsStub(channel)
        with pytest.raises(microcall.errors.DeadlineExceeded):
            stub.Recommend(REQUEST, priority="low")  # type: ignore[call-arg]
    labels = {"rpc_system": "grpc", "rpc_service": "bookstore.Recommendations"}
    assert value(registry, "rpc_server_call_duration_seconds_count", **labels,
                 rpc_method="Recommend", rpc_grpc_status_code="4") == 1  # fmt: skip
    assert value(registry, "microcall_server_expired_total", priority="low") == 1
    spans = traces.spans(3)
    served = next(s for s in spans if s.kind is SpanKind.SERVER)
    call = next(s for s in spans if s.kind is SpanKind.CLIENT and s.parent is None)
    assert trace_id(served) == trace_id(call)
    assert attributes(served)["microcall.refused"] == "expired"
    assert attributes(call)["rpc.grpc.status_code"] == 4
