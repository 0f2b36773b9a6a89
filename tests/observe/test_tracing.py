"""Spans for calls, attempts and requests served, and one trace across three frameworks.

Every test has its own SDK TracerProvider with an in-memory exporter, passed
to the observers (the global provider is never set); the propagator is
OpenTelemetry's global default (W3C trace context and baggage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from fastapi import FastAPI
from flask import Flask, jsonify
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

import microcall
from microcall.errors import ConnectError
from microcall.observe.hooks import InboundRequest
from microcall.observe.tracing import ClientTracing, ServerTracing
from microcall.policy.budget import RetryBudgetConfig
from microcall.server import ServerOptions
from microcall.server._serverwatch import ServerWatch
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware
from tests.conftest import Serve
from tests.server.conftest import ServeASGI, ServeWSGI

QUICK = microcall.Backoff(base=0.001, cap=0.002)


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, count: int | None = None, timeout: float = 10.0) -> list[ReadableSpan]:
        """The finished spans, once there are ``count`` of them (a WSGI span ends after its answer)."""
        give_up = time.monotonic() + timeout
        found = list(self.exporter.get_finished_spans())
        while count is not None and len(found) < count and time.monotonic() < give_up:
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


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def by_kind(spans: list[ReadableSpan], *kinds: SpanKind) -> list[ReadableSpan]:
    return sorted(
        (span for span in spans if span.kind in kinds), key=lambda span: span.start_time or 0
    )


def client_side(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The call's INTERNAL span, then its attempts' CLIENT spans, in the order they started."""
    return by_kind(spans, SpanKind.INTERNAL, SpanKind.CLIENT)


async def echo_server(serve: Serve, traces: Traces | None = None) -> str:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"traceparent": request.headers.get("traceparent")})

    middlewares = [] if traces is None else [AiohttpMiddleware(traces.server())]
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/echo/{id}", echo)
    return await serve(app)


async def test_a_call_span_parents_its_attempt_whose_context_is_sent(
    serve: Serve, traces: Traces
) -> None:
    base = await echo_server(serve, traces)
    async with microcall.AsyncClient(base, observers=[traces.client()]) as client:
        sent = (await client.get("/echo/1", params={"q": "x"})).json()["traceparent"]

    spans = traces.spans(3)
    call, attempt = client_side(spans)
    (served,) = by_kind(spans, SpanKind.SERVER)
    assert parent_of(attempt) == span_id(call)
    assert parent_of(served) == span_id(attempt)
    assert {trace_id(span) for span in spans} == {trace_id(call)}
    assert attempt.context is not None
    flags = attempt.context.trace_flags
    assert sent == f"00-{trace_id(attempt):032x}-{span_id(attempt):016x}-{flags:02x}"
    assert call.name == "GET"
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["url.full"] == f"{base}/echo/1"
    assert attempt.attributes["http.request.method"] == "GET"  # required on every HTTP span
    assert "http.request.resend_count" not in attempt.attributes
    assert served.name == "GET /echo/{id}"
    assert served.attributes is not None
    assert served.attributes["http.route"] == "/echo/{id}"
    assert served.attributes["url.path"] == "/echo/1"


async def test_the_call_span_is_a_child_of_the_callers_span(serve: Serve, traces: Traces) -> None:
    base = await echo_server(serve)
    tracer = traces.provider.get_tracer("test")
    async with microcall.AsyncClient(base, observers=[traces.client()]) as client:
        with tracer.start_as_current_span("checkout") as outer:
            await client.get("/echo/1", route="GET /echo/{id}")
    call = next(span for span in traces.spans(3) if span.name == "GET /echo/{id}")
    assert parent_of(call) == outer.get_span_context().span_id


async def test_retries_carry_their_resend_count(serve: Serve, traces: Traces) -> None:
    seen = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        return web.Response(status=503 if seen < 3 else 200)

    app = web.Application()
    app.router.add_get("/", flaky)
    base = await serve(app)
    async with microcall.AsyncClient(
        base, observers=[traces.client()], strategy=microcall.retry(3, backoff=QUICK)
    ) as client:
        await client.get("/")

    call, *attempts = client_side(traces.spans(4))
    assert [span.attributes["http.request.resend_count"] for span in attempts[1:]] == [1, 2]  # type: ignore[index]
    assert [span.attributes.get("microcall.attempt.kind") for span in attempts] == [  # type: ignore[union-attr]
        None,
        "retry",
        "retry",
    ]
    assert [span.status.status_code for span in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attempts[0].attributes["error.type"] == "503"  # type: ignore[index]
    assert call.status.status_code is StatusCode.UNSET
    assert call.attributes["microcall.attempts"] == 3  # type: ignore[index]


async def test_a_trace_the_sampler_dropped_still_travels_and_records_nothing(
    serve: Serve,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sent: list[str | None] = []

    async def flaky(request: web.Request) -> web.Response:
        sent.append(request.headers.get("traceparent"))
        return web.Response(status=503 if len(sent) < 3 else 200)

    app = web.Application()
    app.router.add_get("/", flaky)
    base = await serve(app)
    tracer = provider.get_tracer("test")
    async with microcall.AsyncClient(
        base, observers=[ClientTracing(provider)], strategy=microcall.retry(3, backoff=QUICK)
    ) as client:
        with tracer.start_as_current_span("checkout") as outer:
            await client.get("/")
    provider.shutdown()

    assert exporter.get_finished_spans() == ()
    # Every attempt carries the call's context, marked not sampled, in the caller's trace:
    # the next hop drops it too.
    assert len(sent) == 3
    assert len(set(sent)) == 1
    _version, trace_hex, parent_hex, flags = sent[0].split("-")  # type: ignore[union-attr]
    assert int(trace_hex, 16) == outer.get_span_context().trace_id
    assert int(parent_hex, 16) not in (0, outer.get_span_context().span_id)
    assert int(flags, 16) & 1 == 0  # the sampled bit is off


async def test_a_hedge_is_marked_and_its_loser_cancelled(serve: Serve, traces: Traces) -> None:
    arrived = 0

    async def slow_first(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 1:
            await asyncio.sleep(5)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", slow_first)
    base = await serve(app)
    async with microcall.AsyncClient(
        base, observers=[traces.client()], strategy=microcall.hedged(0.02, linger=0)
    ) as client:
        await client.get("/")

    _, first, hedge = client_side(traces.spans(3))
    assert first.attributes is not None
    assert hedge.attributes is not None
    assert first.attributes["microcall.attempt.cancelled"] is True
    assert first.attributes["error.type"] == "cancelled"  # as its metric labels it
    assert first.status.status_code is StatusCode.UNSET  # lost the race: not a failure
    assert hedge.attributes["microcall.hedge"] is True
    assert hedge.attributes["microcall.attempt.kind"] == "hedge"
    assert hedge.attributes["http.request.resend_count"] == 1


async def test_refusals_and_failures_are_on_the_call_span(serve: Serve, traces: Traces) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/", unavailable)
    base = await serve(app)
    stingy = RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0)
    async with microcall.AsyncClient(
        base,
        observers=[traces.client()],
        strategy=microcall.retry(3, backoff=QUICK),
        budget=stingy,
    ) as client:
        await client.get("/")
    async with microcall.AsyncClient(observers=[traces.client()]) as client:
        with pytest.raises(ConnectError):
            await client.get("http://127.0.0.1:9/")

    calls = [span for span in traces.spans(4) if span.parent is None]
    refused, failed = sorted(calls, key=lambda span: span.start_time or 0)
    assert [event.name for event in refused.events] == ["microcall.attempt.refused"]
    assert refused.events[0].attributes == {
        "microcall.attempt.kind": "retry",
        "microcall.refused": "retry budget empty",
    }
    assert refused.attributes["error.type"] == "503"  # type: ignore[index]
    assert failed.attributes["error.type"] == "ConnectError"  # type: ignore[index]
    assert failed.status.status_code is StatusCode.ERROR


async def test_one_trace_across_asgi_wsgi_and_aiohttp(
    serve: Serve, serve_asgi: ServeASGI, serve_wsgi: ServeWSGI, traces: Traces
) -> None:
    """client -> FastAPI (ASGI) -> Flask (WSGI, blocking Client) -> aiohttp: nine spans, one trace."""

    async def last(request: web.Request) -> web.Response:
        return web.json_response({"hop": "aiohttp"})

    tail = web.Application(middlewares=[AiohttpMiddleware(traces.server())])
    tail.router.add_get("/last", last)
    tail_url = await serve(tail)

    to_tail = microcall.Client(tail_url, observers=[traces.client()])
    flask = Flask(__name__)

    @flask.get("/middle")
    def middle() -> Any:
        return jsonify({"hop": "wsgi", "next": to_tail.get("/last").json()})

    flask.wsgi_app = WSGIMiddleware(flask.wsgi_app, traces.server())  # type: ignore[method-assign]
    middle_url = serve_wsgi(flask)

    to_middle = microcall.AsyncClient(middle_url, observers=[traces.client()])
    front = FastAPI()
    front.add_middleware(ASGIMiddleware, options=traces.server())

    @front.get("/front/{user}")
    async def first(user: str) -> dict[str, Any]:
        return {"hop": "asgi", "next": (await to_middle.get("/middle")).json()}

    front_url = await serve_asgi(front)
    try:
        async with microcall.AsyncClient(front_url, observers=[traces.client()]) as client:
            with traces.provider.get_tracer("test").start_as_current_span("user action"):
                answer = (await client.get("/front/ada")).json()
    finally:
        await to_middle.aclose()
        await asyncio.to_thread(to_tail.close)
    assert answer["next"]["next"] == {"hop": "aiohttp"}

    spans = traces.spans(10)
    assert len(spans) == 10
    assert len({trace_id(span) for span in spans}) == 1
    servers = {span.name: span for span in by_kind(spans, SpanKind.SERVER)}
    assert set(servers) == {"GET /front/{user}", "GET /middle", "GET /last"}
    clients = by_kind(spans, SpanKind.CLIENT)
    ids = {span_id(span): span for span in spans}

    def chain_up(span: ReadableSpan) -> list[str]:
        names = [f"{span.kind.name}:{span.name}"]
        while span.parent is not None:
            span = ids[span.parent.span_id]
            names.append(f"{span.kind.name}:{span.name}")
        return names

    assert chain_up(servers["GET /last"]) == [
        "SERVER:GET /last",
        "CLIENT:GET",  # attempt
        "INTERNAL:GET",  # call, from the Flask worker thread
        "SERVER:GET /middle",
        "CLIENT:GET",
        "INTERNAL:GET",  # call, from the FastAPI endpoint
        "SERVER:GET /front/{user}",
        "CLIENT:GET",
        "INTERNAL:GET",  # the first call
        "INTERNAL:user action",
    ]
    assert len(clients) == 3  # one attempt span per call; the calls are INTERNAL spans


async def test_a_server_span_without_a_caller_starts_a_trace(serve: Serve, traces: Traces) -> None:
    base = await echo_server(serve, traces)
    async with microcall.AsyncClient(base) as client:  # no tracing on this client
        await client.request("PROPFIND", "/echo/1")
        await client.get("/nowhere")
    brew, missing = by_kind(traces.spans(2), SpanKind.SERVER)
    assert brew.parent is None
    assert (
        brew.name == "HTTP"
    )  # an unknown method (and no route matched it), as the conventions say
    assert brew.attributes is not None
    assert brew.attributes["http.request.method"] == "_OTHER"
    assert brew.attributes["http.request.method_original"] == "PROPFIND"
    assert missing.name == "GET"
    assert missing.attributes["http.response.status_code"] == 404  # type: ignore[index]
    assert missing.status.status_code is StatusCode.UNSET  # a 4xx is not the server's error


def test_grpc_server_spans_continue_the_callers_trace(traces: Traces) -> None:
    tracer = traces.provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        context = caller.get_span_context()
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    metadata = {"traceparent": traceparent}
    watch = ServerWatch(
        [ServerTracing(traces.provider)],
        InboundRequest(
            protocol="grpc",
            method="/shop.Recommendations/Recommend",
            path="/shop.Recommendations/Recommend",
            scheme="http",
            header=metadata.get,
        ),
    )
    assert trace.get_current_span().get_span_context().trace_id == context.trace_id
    watch.handler_done()
    watch.ended(14, "/shop.Recommendations/Recommend")

    served = next(span for span in traces.spans(2) if span.kind is SpanKind.SERVER)
    assert served.name == "shop.Recommendations/Recommend"
    assert parent_of(served) == context.span_id
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == 14
    assert served.status.status_code is StatusCode.ERROR
    assert not trace.get_current_span().get_span_context().is_valid
