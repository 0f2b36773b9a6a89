"""Stale keep-alive connections: a request that meets a dead pooled connection is resent once.

Servers close idle keep-alive connections on their own schedule. A request
written on one just as it closes never reached a live server; the transport
sends it again on a fresh connection, inside the same attempt, for requests
that may be sent twice (and never a POST), without spending retry budget.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

import microcall
from microcall.errors import ReadError
from microcall.transports._aiohttp_resend import worth_resending
from microcall.transports.h1 import H1Transport
from tests.server.conftest import ServeASGI
from tests.server.conftest import serve_asgi as serve_asgi  # the `serve_asgi` fixture
from tests.transports._keepalive_servers import Behaviour, ThreadedServer

CALLS = 300
RETRY = microcall.retry(attempts=3, backoff=microcall.Backoff(base=0.001, cap=0.002))


@contextlib.contextmanager
def threaded(behaviour: Behaviour) -> Iterator[ThreadedServer]:
    with ThreadedServer(behaviour) as server:
        yield server


async def gets(client: microcall.AsyncClient, calls: int) -> collections.Counter[str]:
    """Outcomes of ``calls`` sequential GETs: status codes, or error class names."""
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(calls):
        try:
            response = await client.get("/")
        except microcall.CallError as error:
            outcomes[type(error).__name__] += 1
        else:
            outcomes[str(response.status_code)] += 1
    return outcomes


@contextlib.asynccontextmanager
async def counted_client(url: str, **options: object) -> AsyncIterator[microcall.AsyncClient]:
    async with microcall.AsyncClient(url, **options) as client:  # type: ignore[arg-type]
        yield client


CLOSING_SERVERS = {
    "close at once after each answer": Behaviour(close_after=0.0),
    "close 1 ms after each answer": Behaviour(close_after=0.001),
    "close 5 ms after each answer": Behaviour(close_after=0.005),
    "close the next request unanswered": Behaviour(answer_once=True),
    "reset every 10th connection": Behaviour(answer_once=True, reset_every=10),
    "reset every 10th connection 1 ms after an answer": Behaviour(
        close_after=0.001, reset_every=10
    ),
}


@pytest.mark.parametrize("behaviour", CLOSING_SERVERS.values(), ids=CLOSING_SERVERS.keys())
async def test_gets_never_fail_on_a_connection_the_server_closed(behaviour: Behaviour) -> None:
    with threaded(behaviour) as server:
        async with counted_client(server.url) as client:
            outcomes = await gets(client, CALLS)
    assert outcomes == {"200": CALLS}


async def test_resends_are_recorded_on_the_attempt_and_say_so() -> None:
    with threaded(Behaviour(answer_once=True)) as server:
        async with counted_client(server.url) as client:
            await client.get("/")
            response = await client.get("/")
    (attempt,) = response.attempts
    assert attempt.resent
    assert "resent on a fresh connection" in attempt.describe()
    # Each connection answered once: the second GET was seen twice, once unanswered.
    assert server.counts.requests == 3
    assert server.counts.connections == 2


async def test_a_resend_spends_no_retry_budget() -> None:
    with threaded(Behaviour(answer_once=True)) as server:
        async with counted_client(server.url, strategy=RETRY) as client:
            outcomes = await gets(client, 50)
            budget = client.budget
    assert outcomes == {"200": 50}
    assert budget is not None
    assert budget.deposited == 50
    assert budget.withdrawn == 0
    assert budget.refused == 0


async def test_a_post_is_never_sent_twice() -> None:
    with threaded(Behaviour(answer_once=True)) as server:
        async with counted_client(server.url) as client:
            failures = 0
            for number in range(100):
                try:
                    await client.post("/", content=b"id-%d" % number)
                except ReadError as error:
                    failures += 1
                    resent = error.attempts[0].resent
                    assert not resent
    assert max(server.counts.seen.values()) == 1
    assert len(server.counts.seen) == 100
    # Every POST that met a used connection failed rather than being sent again.
    assert failures == 50


async def test_an_opted_in_post_is_resent() -> None:
    with threaded(Behaviour(answer_once=True)) as server:
        async with counted_client(server.url) as client:
            for number in range(20):
                response = await client.post(
                    "/", content=b"id-%d" % number, headers={"Idempotency-Key": str(number)}
                )
                assert response.content == b"id-%d" % number


async def test_posts_to_a_server_closing_after_each_answer_are_sent_at_most_once() -> None:
    with threaded(Behaviour(close_after=0.001)) as server:
        async with counted_client(server.url) as client:
            for number in range(CALLS):
                with contextlib.suppress(ReadError):
                    await client.post("/", content=b"id-%d" % number)
    assert max(server.counts.seen.values()) == 1


def hold_until_closed(server: ThreadedServer) -> bool:
    """Wait, holding the caller's loop (no turn taken), until the server closed its connections."""
    deadline = time.monotonic() + 5.0
    while server.server.open and time.monotonic() < deadline:
        time.sleep(0.005)
    return not server.server.open


async def test_a_post_never_meets_a_close_that_already_arrived() -> None:
    """The close came with the answer, but the loop has not read it yet when the next POST goes.

    The test holds the loop (a blocking wait, no turn taken) until the server
    has closed the connection: its close is on the client's socket, unread.
    The POST, which gets no resend, must see it and take a fresh connection;
    it used to be written to the dead one and fail (ReadError, one POST in two).
    """
    with threaded(Behaviour(close_after=0.0)) as server:
        async with counted_client(server.url, transport=H1Transport()) as client:
            for number in range(10):
                response = await client.post("/", content=b"id-%d" % number)
                assert response.content == b"id-%d" % number
                assert hold_until_closed(server)
    assert max(server.counts.seen.values()) == 1
    assert server.counts.connections == 10


async def test_after_an_idle_gap_the_server_closed() -> None:
    # The server closes a connection idle 20 ms; calls come 15-25 ms apart, so
    # some meet the close on its way.
    with threaded(Behaviour(idle_close=0.02)) as server:
        async with counted_client(server.url) as client:
            outcomes: collections.Counter[str] = collections.Counter()
            for number in range(60):
                await asyncio.sleep(0.015 + (number % 10) * 0.001)
                outcomes += await gets(client, 1)
    assert outcomes == {"200": 60}


async def test_every_500_then_close_is_answered_and_the_next_call_succeeds() -> None:
    with threaded(Behaviour(fail_every=3)) as server:
        async with counted_client(server.url) as client:
            outcomes = await gets(client, CALLS)
    assert outcomes == {"200": CALLS * 2 // 3, "500": CALLS // 3}


async def test_after_a_uvicorn_500_the_next_call_succeeds(serve_asgi: ServeASGI) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")  # uvicorn answers 500 and closes the connection
        status = 500 if scope["path"] == "/500" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    url = await serve_asgi(app)
    async with counted_client(url) as client:
        outcomes: collections.Counter[int] = collections.Counter()
        for _ in range(30):
            for path in ("/boom", "/", "/500", "/"):
                outcomes[(await client.get(path)).status_code] += 1
    assert outcomes == {500: 60, 200: 60}


def test_the_resend_rules() -> None:
    dead = aiohttp.ServerDisconnectedError()
    half_answered = aiohttp.ServerDisconnectedError(message=object())  # type: ignore[arg-type]
    reset = aiohttp.ClientOSError(104, "Connection reset by peer")
    unwritten = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    assert worth_resending(dead, replayable=True)
    assert not worth_resending(dead, replayable=False)
    assert not worth_resending(half_answered, replayable=True)
    assert worth_resending(reset, replayable=True)
    assert not worth_resending(reset, replayable=False)
    assert worth_resending(unwritten, replayable=False)


async def test_resends_are_counted_in_prometheus() -> None:
    from prometheus_client import CollectorRegistry

    from microcall.observe.prometheus import ClientMetrics

    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    with threaded(Behaviour(answer_once=True)) as server:
        async with counted_client(server.url, observers=[metrics]) as client:
            outcomes = await gets(client, 10)
    assert outcomes == {"200": 10}
    labels = {"http_request_method": "GET", "server_address": "127.0.0.1"}
    port = server.url.rsplit(":", 1)[1]
    resends = registry.get_sample_value(
        "microcall_client_connection_resends_total", {**labels, "server_port": port}
    )
    assert resends == 9
