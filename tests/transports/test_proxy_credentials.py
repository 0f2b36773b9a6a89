"""A proxy's credentials never reach spans, metrics, logs, reprs, error messages or the target.

The proxy URL's user-info is marked ``SECRET``. Calls go through a proxy
that accepts them, one that wants other credentials (407), one that refuses
connections, plain and tunnelled, with retries, so every kind of span,
metric, log line and error is written; none of them may contain the marker.
The target sees no ``Proxy-Authorization`` either: it is for the proxy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from yarl import URL

import microcall
from microcall.observe import LogEvents, LogLimiter, Observer, logs
from microcall.observe.prometheus import ClientMetrics
from microcall.observe.tracing import ClientTracing
from microcall.transports._proxy import parse_proxy
from tests.proxyserver import ForwardProxy, closed_port
from tests.transports.test_proxy import TRANSPORTS, Targets
from tests.transports.test_proxy import ca as ca  # the `ca` fixture
from tests.transports.test_proxy import targets as targets  # the `targets` fixture

MARK = "SECRET"


@pytest.fixture
async def guarded() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy(auth=("reader", f"{MARK}-password")) as running:
        yield running


@pytest.mark.parametrize("kind", list(TRANSPORTS))
async def test_no_proxy_credential_is_written_anywhere(
    kind: str,
    targets: Targets,
    guarded: ForwardProxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="microcall")
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = ClientMetrics(registry)
    observers: list[Observer] = [metrics, ClientTracing(provider), LogEvents(limiter=LogLimiter())]
    wrong = f"http://reader:{MARK}-wrong@{guarded.address}"
    refusing = f"http://reader:{MARK}-refused@127.0.0.1:{closed_port()}"
    retry = microcall.retry(2, backoff=microcall.Backoff(base=0.001, cap=0.002))
    texts: list[str] = []
    answered = 0
    for proxy in (guarded.url, wrong, refusing):
        transport = TRANSPORTS[kind](verify=targets.trusting, proxy=proxy)
        texts.append(repr(transport))
        async with microcall.AsyncClient(
            transport=transport, timeout=10.0, observers=observers, strategy=retry
        ) as client:
            texts.append(repr(client))
            for target in (targets.http, targets.https):
                try:
                    response = await client.get(f"{target}/books")
                except microcall.ProxyError as error:
                    texts += [str(error), repr(error), *map(repr, error.attempts)]
                    texts += [attempt.describe() for attempt in error.attempts]
                    with contextlib.suppress(Exception):
                        texts.append(repr(error.__cause__))
                else:
                    answered += 1
                    assert response.json()["proxy_authorization"] is None
                    texts += [repr(response), *map(repr, response.attempts)]

    assert answered == 2  # the good proxy carried both calls; the others failed them
    spans = exporter.get_finished_spans()
    assert spans
    exposition = generate_latest(registry).decode()
    assert "http_client_request_duration_seconds" in exposition
    # The marker, and the Basic header values it hides in (base64).
    secrets = [MARK, *(_basic(proxy) for proxy in (guarded.url, wrong, refusing))]
    for text in [*texts, exposition, *(span.to_json() for span in spans)]:
        assert not any(secret in text for secret in secrets), text
    for record in caplog.records:
        assert not any(secret in record.getMessage() for secret in secrets)
        assert not any(secret in repr(vars(record)) for secret in secrets)
    # What reached the proxy carried the credentials; nothing else did.
    assert any(seen.headers.get("proxy-authorization") for seen in guarded.seen)
    assert all(MARK not in URL(seen.target).raw_path_qs for seen in guarded.seen)


def _basic(proxy: str) -> str:
    authorization = parse_proxy(proxy).authorization
    assert authorization is not None
    return authorization.removeprefix("Basic ")
