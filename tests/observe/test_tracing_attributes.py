"""Exactly what a client span carries, driven through ``ClientTracing`` without a network.

These pin every attribute of the call and attempt spans (name, attributes,
status) for each kind of outcome, so that the shortcuts tracing takes to
stay cheap (attribute dicts built once per method and server and per URL,
single attributes set at the end) cannot change what is recorded. The
caches those shortcuts keep are checked to stay bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall.errors import ConnectError
from microcall.observe import tracing
from microcall.observe.tracing import ClientTracing

BASE = "http://127.0.0.1:8080"


@dataclass
class Answer:
    status_code: int


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = ClientTracing(self.provider)

    def call(
        self,
        url: str | URL,
        attempts: list[tuple[Attempt, URL | None]],
        *,
        method: str = "GET",
        route: str = "",
        status: int | None = 200,
        error: BaseException | None = None,
    ) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """One call through the observer; its call span and attempt spans, in order."""
        self.exporter.clear()
        request = Request(method, URL(url) if isinstance(url, str) else url, {}, route=route)
        call = self.tracing.call_started(request)
        for attempt, attempt_url in attempts:
            if not attempt.sent:
                continue
            scope = call.attempt_started(
                attempt.index, attempt.kind, attempt_url or request.url, {}
            )
            assert scope is not None
            scope.attempt_ended(attempt)
        call.call_ended(
            None if status is None else Answer(status),  # type: ignore[arg-type]
            error,
            [attempt for attempt, _ in attempts],
        )
        *sent, ended = self.exporter.get_finished_spans()
        return ended, list(sent)


@pytest.fixture
def spans() -> Iterator[Spans]:
    found = Spans()
    yield found
    found.provider.shutdown()


def attempt(
    index: int = 0,
    kind: AttemptKind = AttemptKind.FIRST,
    status: int | None = 200,
    **more: Any,
) -> Attempt:
    return Attempt(index, kind, "", 0.0, 0.001, status, **more)


ENDPOINT = {"server.address": "127.0.0.1", "server.port": 8080}
GET = {**ENDPOINT, "http.request.method": "GET"}


def test_a_call_that_succeeds_first_time(spans: Spans) -> None:
    call, (first,) = spans.call(f"{BASE}/books/1?key=hidden", [(attempt(), None)])
    assert call.name == "GET"
    # The call is an internal span: its one attempt is the HTTP client span and
    # says everything; the call repeats none of it.
    assert call.kind is SpanKind.INTERNAL
    assert dict(call.attributes or {}) == {}
    assert call.status.status_code is StatusCode.UNSET
    assert first.name == "GET"
    assert first.kind is SpanKind.CLIENT
    assert dict(first.attributes or {}) == {
        **GET,
        "url.full": f"{BASE}/books/1",
        "http.response.status_code": 200,
    }
    assert first.status.status_code is StatusCode.UNSET
    assert first.parent is not None
    assert call.context is not None
    assert first.parent.span_id == call.context.span_id


def test_the_route_names_the_call_span_only(spans: Spans) -> None:
    call, (first,) = spans.call(f"{BASE}/books/1", [(attempt(), None)], route="GET /books/{id}")
    assert call.name == "GET /books/{id}"
    assert first.name == "GET"
    call, _ = spans.call(f"{BASE}/books/2", [(attempt(), None)])
    assert call.name == "GET"


def test_an_unknown_method(spans: Spans) -> None:
    call, (first,) = spans.call(f"{BASE}/", [(attempt(), None)], method="PROPFIND")
    other = {
        **ENDPOINT,
        "http.request.method": "_OTHER",
        "http.request.method_original": "PROPFIND",
    }
    assert call.name == first.name == "HTTP"
    assert dict(call.attributes or {}) == {}
    assert dict(first.attributes or {}) == {
        **other,
        "url.full": f"{BASE}/",
        "http.response.status_code": 200,
    }


def test_retries_hedges_and_a_lost_hedge(spans: Spans) -> None:
    replica = URL("http://10.0.0.2:8081/books/1")
    call, (first, retry, hedge) = spans.call(
        f"{BASE}/books/1",
        [
            (attempt(status=503), None),
            (attempt(1, AttemptKind.RETRY, status=None, cancelled=True), None),
            (attempt(2, AttemptKind.HEDGE), replica),
        ],
    )
    assert dict(first.attributes or {}) == {
        **GET,
        "url.full": f"{BASE}/books/1",
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert first.status.status_code is StatusCode.ERROR
    assert dict(retry.attributes or {}) == {
        **GET,
        "url.full": f"{BASE}/books/1",
        "http.request.resend_count": 1,
        "microcall.attempt.kind": "retry",
        "microcall.attempt.cancelled": True,
        "error.type": "cancelled",
    }
    assert retry.status.status_code is StatusCode.UNSET
    assert dict(hedge.attributes or {}) == {
        "server.address": "10.0.0.2",
        "server.port": 8081,
        "http.request.method": "GET",
        "url.full": "http://10.0.0.2:8081/books/1",
        "http.request.resend_count": 2,
        "microcall.attempt.kind": "hedge",
        "microcall.hedge": True,
        "http.response.status_code": 200,
    }
    assert dict(call.attributes or {}) == {"microcall.attempts": 3}
    # What a retry added stays on the retry: the next first attempt is as before.
    _, (again,) = spans.call(f"{BASE}/books/1", [(attempt(), None)])
    assert dict(again.attributes or {}) == {
        **GET,
        "url.full": f"{BASE}/books/1",
        "http.response.status_code": 200,
    }


def test_failures_and_refusals(spans: Spans) -> None:
    refused = attempt(1, AttemptKind.RETRY, status=None, error="retry budget empty", sent=False)
    call, (first,) = spans.call(
        f"{BASE}/", [(attempt(status=500), None), (refused, None)], status=500
    )
    assert dict(call.attributes or {}) == {"error.type": "500", "microcall.attempts": 2}
    assert call.status.status_code is StatusCode.ERROR
    assert [(event.name, dict(event.attributes or {})) for event in call.events] == [
        (
            "microcall.attempt.refused",
            {"microcall.attempt.kind": "retry", "microcall.refused": "retry budget empty"},
        )
    ]

    failed = attempt(status=None, error="ConnectError: refused at 127.0.0.1:8080")
    call, (first,) = spans.call(
        f"{BASE}/", [(failed, None)], status=None, error=ConnectError("refused")
    )
    assert dict(call.attributes or {}) == {"error.type": "ConnectError"}
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "ConnectError"
    assert dict(first.attributes or {}) == {
        **GET,
        "url.full": f"{BASE}/",
        "error.type": "ConnectError",
    }
    assert first.status.status_code is StatusCode.ERROR


def test_an_ipv6_server_and_credentials_in_the_url(spans: Spans) -> None:
    call, (first,) = spans.call("http://user:pw@[::1]:9000/a?token=x#f", [(attempt(), None)])
    assert dict(call.attributes or {}) == {}
    assert dict(first.attributes or {}) == {
        "server.address": "::1",
        "server.port": 9000,
        "http.request.method": "GET",
        "url.full": "http://[::1]:9000/a",
        "http.response.status_code": 200,
    }


def test_a_grpc_call(spans: Spans) -> None:
    call, (first,) = spans.call(
        "grpc://127.0.0.1:50051/shop.Recommendations/Recommend",
        [(attempt(status=None), None)],
        method="POST",
        status=0,
    )
    assert call.name == first.name == "shop.Recommendations/Recommend"
    assert dict(call.attributes or {}) == {
        "server.address": "127.0.0.1",
        "server.port": 50051,
        "rpc.system": "grpc",
        "rpc.service": "shop.Recommendations",
        "rpc.method": "Recommend",
        "rpc.grpc.status_code": 0,
    }
    assert dict(first.attributes or {}) == {"server.address": "127.0.0.1", "server.port": 50051}


def test_every_url_gets_its_own_full_url(spans: Spans) -> None:
    for number in range(3):
        for _ in range(2):  # the same URL again, as a new object
            _, (first,) = spans.call(f"{BASE}/books/{number}", [(attempt(), None)])
            assert (first.attributes or {})["url.full"] == f"{BASE}/books/{number}"
    same = URL(f"{BASE}/same")
    for _ in range(2):  # and as the same object
        _, (first,) = spans.call(same, [(attempt(), None)])
        assert (first.attributes or {})["url.full"] == f"{BASE}/same"


def test_one_url_object_under_other_methods_and_attempt_urls_keeps_each_apart(
    spans: Spans,
) -> None:
    # A client reuses one URL object per path: tracing finds the last call's
    # shape, and an attempt's attributes, by identity. A method or an
    # attempt URL that differs must not be taken for the last one.
    same = URL(f"{BASE}/same")
    replica = URL("http://127.0.0.2:8081/same")
    for method, to in [("GET", None), ("DELETE", None), ("GET", replica), ("GET", None)] * 2:
        call, (first,) = spans.call(same, [(attempt(), to)], method=method)
        assert call.name == method
        assert dict(first.attributes or {}) == {
            "http.request.method": method,
            "server.address": "127.0.0.2" if to is replica else "127.0.0.1",
            "server.port": 8081 if to is replica else 8080,
            "url.full": str(to or same),
            "http.response.status_code": 200,
        }


def test_the_caches_stay_bounded_and_right(spans: Spans) -> None:
    # Ever new paths on one server: the URL cache empties itself when full.
    for number in range(tracing.MAX_URLS * 3):
        _, (first,) = spans.call(f"{BASE}/books/{number}", [(attempt(), None)])
        assert (first.attributes or {})["url.full"] == f"{BASE}/books/{number}"
    (shape,) = spans.tracing._shapes.values()
    assert 0 < len(shape.urls) <= tracing.MAX_URLS
    # Ever new servers (calls by absolute URL): so does the cache of methods and servers.
    for number in range(tracing.MAX_SHAPES * 3):
        _, (first,) = spans.call(
            f"http://10.0.{number // 250}.{number % 250}:80/", [(attempt(), None)]
        )
        assert (first.attributes or {})["server.address"] == f"10.0.{number // 250}.{number % 250}"
    assert 0 < len(spans.tracing._shapes) <= tracing.MAX_SHAPES


def test_cached_attributes_are_read_only(spans: Spans) -> None:
    request = Request("GET", URL(f"{BASE}/x"), {})
    spans.tracing.call_started(request).call_ended(Answer(200), None, [])  # type: ignore[arg-type]
    (shape,) = spans.tracing._shapes.values()
    with pytest.raises(TypeError):
        shape.attributes["server.port"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        shape.attempt_attributes(URL(f"{BASE}/x"))["url.full"] = "elsewhere"  # type: ignore[index]


def test_overlapping_attempts_each_end_their_own_span(spans: Spans) -> None:
    # The first attempt's scope is the call's own object; a hedge started
    # while it runs, and ended before it, has a scope and a span of its own.
    request = Request("GET", URL(f"{BASE}/x"), {})
    call = spans.tracing.call_started(request)
    first = call.attempt_started(0, AttemptKind.FIRST, request.url, {})
    hedge = call.attempt_started(1, AttemptKind.HEDGE, request.url, {})
    assert first is not None
    assert hedge is not None
    assert hedge is not first
    hedge.attempt_ended(attempt(1, AttemptKind.HEDGE, 200))
    first.attempt_ended(attempt(0, AttemptKind.FIRST, None, cancelled=True))
    call.call_ended(Answer(200), None, [])  # type: ignore[arg-type]
    hedged, cancelled, _ = spans.exporter.get_finished_spans()
    assert (hedged.attributes or {})["microcall.hedge"] is True
    assert (hedged.attributes or {})["http.response.status_code"] == 200
    assert (cancelled.attributes or {})["error.type"] == "cancelled"
    assert "microcall.hedge" not in (cancelled.attributes or {})
