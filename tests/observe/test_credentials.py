"""Credentials never reach spans, metrics or logs.

Every credential a request can carry is sent, each one marked ``SECRET``:
URL user-info, a query string, Authorization, Proxy-Authorization, Cookie,
X-API-Key and a custom token header on the request, Set-Cookie on the
response. The calls fail, retry, get refused by the budget, trip a breaker
and get refused as expired by the server, so every kind of span, metric and
log line is written; none of them may contain the marker.
"""

from __future__ import annotations

import contextlib
import logging

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

import microcall
from microcall.errors import CallError
from microcall.observe import LogEvents, LogLimiter, Observer, ServerObserver, logs
from microcall.observe.prometheus import ClientMetrics, ServerMetrics
from microcall.observe.tracing import ClientTracing, ServerTracing
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudgetConfig
from microcall.server import ServerOptions
from microcall.server.aiohttp import AiohttpMiddleware
from tests.conftest import Serve

MARK = "SECRET"
CREDENTIALS = {
    "Authorization": f"Bearer {MARK}-bearer",
    "Proxy-Authorization": f"Basic {MARK}-proxy",
    "Cookie": f"session={MARK}-cookie",
    "X-API-Key": f"{MARK}-api-key",
    "X-Auth-Token": f"{MARK}-token",
}
QUERY = {"api_key": f"{MARK}-query", "token": f"{MARK}-query-2"}


async def test_no_credential_reaches_spans_metrics_or_logs(
    serve: Serve,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="microcall")
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Limiters of their own: other tests' lines must not hold these back.
    log_events = LogEvents(limiter=LogLimiter())
    observers: list[ServerObserver] = [ServerMetrics(registry), ServerTracing(provider), log_events]

    async def answer(request: web.Request) -> web.Response:
        status = 503 if request.match_info["what"] == "fail" else 200
        response = web.Response(status=status, text="ok")
        response.set_cookie("session", f"{MARK}-set-cookie")
        return response

    app = web.Application(middlewares=[AiohttpMiddleware(ServerOptions(observers=observers))])
    app.router.add_get("/{what}", answer)
    base = await serve(app)
    with_user_info = base.replace("http://", f"http://user:{MARK}-password@")

    client_metrics = ClientMetrics(registry)
    client_observers: list[Observer] = [client_metrics, ClientTracing(provider), log_events]
    # aiohttp refuses an Authorization header beside user-info: one client each.
    for url, headers in (
        (base, CREDENTIALS),
        (with_user_info, {k: v for k, v in CREDENTIALS.items() if "Authorization" not in k}),
    ):
        async with microcall.AsyncClient(
            url,
            headers=headers,
            observers=client_observers,
            strategy=microcall.retry(2, backoff=microcall.Backoff(base=0.001, cap=0.002)),
            budget=RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0),
            breaker=CircuitBreakerConfig(minimum_throughput=3, break_duration=60),
        ) as client:
            client_metrics.watch(client)
            assert (await client.get("/ok", params=QUERY)).status_code == 200
            for _ in range(3):  # a retry, then budget refusals, then the breaker opens
                with contextlib.suppress(CallError):
                    await client.get("/fail", params=QUERY)
    # Expired on arrival (a microcall client sets its own timeout): the server logs it.
    async with aiohttp.ClientSession() as session:
        expired = {**CREDENTIALS, "X-Request-Timeout": "0"}
        async with session.get(f"{base}/ok", params=QUERY, headers=expired) as refused:
            assert refused.status == 408

    # Everything this test was meant to produce was produced...
    events = {getattr(record, "microcall_event", None) for record in caplog.records}
    assert {"breaker_state", "budget_exhausted", "expired"} <= events
    spans = exporter.get_finished_spans()
    assert len(spans) >= 8
    exposition = generate_latest(registry).decode()
    assert "microcall_client_breaker_state" in exposition

    # ...and holds no credential.
    assert MARK not in exposition
    for span in spans:
        assert MARK not in span.to_json(), span.name
    for record in caplog.records:
        assert MARK not in record.getMessage()
        assert MARK not in repr(vars(record))


async def test_no_credential_from_auth_or_the_cookie_jar_reaches_spans_metrics_or_logs(
    serve: Serve,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for what ``auth=`` and ``cookies=`` add: Authorization and Cookie headers
    set by the client itself, a token renewed after a 401, cookies a server sets, and the
    AuthError of a refresh that failed."""
    caplog.set_level(logging.INFO, logger="microcall")
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def answer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {MARK}-fresh":
            return web.Response(status=401)
        status = 503 if request.match_info["what"] == "fail" else 200
        response = web.Response(status=status, text="ok")
        response.set_cookie("session", f"{MARK}-set-cookie")
        return response

    app = web.Application()
    app.router.add_get("/{what}", answer)
    base = await serve(app)

    class Renewing(microcall.Auth):
        def __init__(self, fails: bool) -> None:
            self.token = f"{MARK}-stale"
            self.fails = fails

        def apply(self, request: microcall.OutgoingRequest) -> None:
            request.headers["Authorization"] = f"Bearer {self.token}"

        async def refresh(self, response: microcall.Response) -> None:
            if self.fails:
                raise RuntimeError(f"refused {MARK}-client-secret")
            self.token = f"{MARK}-fresh"

    client_metrics = ClientMetrics(registry)
    seen: list[str] = []
    async with microcall.AsyncClient(
        base,
        auth=Renewing(fails=False),
        cookies={"tenant": f"{MARK}-initial-cookie"},
        observers=[client_metrics, ClientTracing(provider), LogEvents(limiter=LogLimiter())],
        strategy=microcall.retry(2, backoff=microcall.Backoff(base=0.001, cap=0.002)),
        budget=RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0),
        breaker=CircuitBreakerConfig(minimum_throughput=3, break_duration=60),
    ) as client:
        client_metrics.watch(client)
        ok = await client.get("/ok", params=QUERY)
        assert ok.status_code == 200
        seen += [repr(ok), repr(ok.request), repr(client.cookies is not None)]
        with pytest.raises(microcall.AuthError) as failed:
            await client.get("/ok", auth=Renewing(fails=True), params=QUERY)
        seen.append(str(failed.value))
        assert "refresh() raised RuntimeError" in seen[-1]
        for _ in range(3):  # a retry, then budget refusals, then the breaker opens
            try:
                await client.get("/fail", params=QUERY)
            except CallError as error:
                seen.append(str(error))
        seen.append(repr(microcall.BasicAuth("user", f"{MARK}-password")))

    events = {getattr(record, "microcall_event", None) for record in caplog.records}
    assert {"breaker_state", "budget_exhausted"} <= events
    spans = exporter.get_finished_spans()
    assert len(spans) >= 4
    exposition = generate_latest(registry).decode()
    assert MARK not in exposition
    for span in spans:
        assert MARK not in span.to_json(), span.name
    for record in caplog.records:
        assert MARK not in record.getMessage()
        assert MARK not in repr(vars(record))
    for text in seen:
        assert MARK not in text


async def test_errors_that_refuse_a_call_never_repeat_a_credential() -> None:
    # A header value microcall refuses (a token with a line break in it, a
    # token given as bytes) is named by its header, never repeated.
    async with microcall.AsyncClient("http://127.0.0.1:9") as client:
        for value in (f"Bearer {MARK}\r\nX: y", f"Bearer {MARK}".encode()):
            with pytest.raises(microcall.UsageError) as refused:
                await client.get("/", headers={"Authorization": value})  # type: ignore[dict-item]
            assert "Authorization" in str(refused.value)
            assert MARK not in str(refused.value)
