"""Callables are observed as HTTP and gRPC calls are: the same observers, metrics and spans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

import microcall
from microcall import AttemptKind, AttemptsExhausted, Resilience
from microcall.observe.prometheus import ClientMetrics
from microcall.observe.tracing import ClientTracing
from tests.conftest import Serve
from tests.observe._metrics import label_values, series, value
from tests.resilience.conftest import Flaky, Recorder

NO_WAIT = microcall.Backoff(base=0.0)


def test_observers_hear_the_call_each_attempt_and_the_end() -> None:
    recorder = Recorder()
    resilience = Resilience(
        strategy=microcall.retry(3, backoff=NO_WAIT),
        on=ConnectionError,
        name="orders-db",
        observers=[recorder],
    )
    resilience.call(Flaky(ConnectionError("reset"), value="row"))
    with pytest.raises(AttemptsExhausted) as raised:
        resilience.call(Flaky(*[ConnectionError("reset")] * 3))

    answered, failed = recorder.calls
    request = answered.request
    assert (request.method, request.url.scheme, request.route, request.endpoint) == (
        "CALL",
        "call",
        "orders-db",
        "orders-db",
    )
    assert [(index, kind) for index, kind, _ in answered.attempts_started] == [
        (0, AttemptKind.FIRST),
        (1, AttemptKind.RETRY),
    ]
    assert [a.error for a in answered.attempts_ended] == ["ConnectionError", None]
    assert answered.ended == (None, None, tuple(answered.attempts_ended))
    assert failed.ended is not None
    assert failed.ended[1] is raised.value
    assert failed.ended[2] == raised.value.attempts


def test_an_observer_that_raises_never_breaks_the_call() -> None:
    class Broken:
        def call_started(self, request: microcall.Request) -> None:
            raise RuntimeError("observer bug")

    assert Resilience(observers=[Broken()]).call(lambda: 7) == 7


def test_prometheus_counts_callables_as_rpcs_of_their_own_system() -> None:
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    resilience = Resilience(
        strategy=microcall.retry(2, backoff=NO_WAIT),
        on=ConnectionError,
        name="orders-db",
        observers=[metrics],
    )
    resilience.call(Flaky(ConnectionError("reset"), value=1))
    with pytest.raises(ValueError, match="bad"):
        resilience.call(Flaky(ValueError("bad")))

    calls = {
        "rpc_system": "callable",
        "rpc_service": "orders-db",
        "rpc_method": "call",
        "rpc_grpc_status_code": "",
        "server_address": "",
        "server_port": "",
    }
    assert value(registry, "rpc_client_call_duration_seconds_count", **calls, error_type="") == 1
    assert (
        value(registry, "rpc_client_call_duration_seconds_count", **calls, error_type="ValueError")
        == 1
    )
    assert series(registry, "http_client_request_duration_seconds") == set()  # not an HTTP call
    attempts = {"http_request_method": "_OTHER", "server_address": "orders-db", "server_port": ""}
    assert value(registry, "microcall_client_attempts_total", **attempts, attempt_kind="retry") == 1
    assert value(registry, "microcall_client_attempts_total", **attempts, attempt_kind="first") == 2
    assert label_values(registry, "rpc_client_call_duration_seconds", "rpc_system") == {"callable"}


def test_prometheus_counts_a_retry_the_budget_refused() -> None:
    registry = CollectorRegistry()
    empty = microcall.RetryBudget(
        microcall.RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0)
    )
    resilience = Resilience(
        strategy=microcall.retry(2, backoff=NO_WAIT),
        on=ConnectionError,
        name="orders-db",
        budget=empty,
        observers=[ClientMetrics(registry)],
    )
    with pytest.raises(AttemptsExhausted):
        resilience.call(Flaky(ConnectionError("reset")))
    refused = {
        "http_request_method": "_OTHER",
        "server_address": "orders-db",
        "server_port": "",
        "attempt_kind": "retry",
        "reason": "retry_budget",
    }
    assert value(registry, "microcall_client_attempts_refused_total", **refused) == 1


class _Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def traces() -> Iterator[_Traces]:
    found = _Traces()
    yield found
    found.provider.shutdown()


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_a_span_per_call_and_attempt_and_the_http_calls_inside_are_children(
    serve: Serve, traces: _Traces
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/price", ok)
    url = await serve(app)
    tracing = ClientTracing(traces.provider)
    flaky = Flaky(ConnectionError("reset"), value=None)
    async with microcall.AsyncClient(url, observers=[tracing]) as client:

        @microcall.resilient(
            strategy=microcall.retry(2, backoff=NO_WAIT),
            on=ConnectionError,
            name="pricing.quote",
            observers=[tracing],
        )
        async def quote() -> object:
            flaky()
            return (await client.get("/price")).json()

        assert await quote() == {"ok": True}

    finished = traces.spans()
    (call,) = [span for span in finished if span.name == "pricing.quote"]
    first, retry = sorted(
        (span for span in finished if span.name == "pricing.quote/call"),
        key=lambda span: span.start_time or 0,
    )
    http_ids = {_id(span) for span in finished if span.name == "GET"}
    # The HTTP call's own span: a GET whose parent is not another GET (its attempt's).
    (http,) = [span for span in finished if span.name == "GET" and _parent(span) not in http_ids]
    assert call.kind is SpanKind.CLIENT
    assert call.attributes is not None
    assert call.attributes["rpc.system"] == "callable"
    assert call.attributes["rpc.service"] == "pricing.quote"
    assert call.attributes["microcall.attempts"] == 2
    assert _parent(first) == _parent(retry) == _id(call)
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["error.type"] == "ConnectionError"
    # The HTTP call made by the second attempt is that attempt's child.
    assert _parent(http) == _id(retry)


def test_a_callable_past_its_deadline_carries_no_grpc_status(traces: _Traces) -> None:
    # DEADLINE_EXCEEDED is gRPC's word: a wrapped callable says DeadlineExceeded
    # in error_type and nothing in the gRPC status label or attribute.
    registry = CollectorRegistry()
    resilience = Resilience(
        name="orders-db", observers=[ClientMetrics(registry), ClientTracing(traces.provider)]
    )
    with microcall.deadline(0), pytest.raises(microcall.DeadlineExceeded):
        resilience.call(lambda: 1)

    assert label_values(registry, "rpc_client_call_duration_seconds", "rpc_grpc_status_code") == {
        ""
    }
    assert label_values(registry, "rpc_client_call_duration_seconds", "error_type") == {
        "DeadlineExceeded"
    }
    (call,) = traces.spans()
    assert call.attributes is not None
    assert "rpc.grpc.status_code" not in call.attributes
    assert call.attributes["error.type"] == "DeadlineExceeded"
    assert call.status.status_code is StatusCode.ERROR
