"""Strategies against real aiohttp servers on 127.0.0.1: what the server actually sees.

Each test counts the hits a handler receives, so "sent once" and "retried"
are facts about the wire, not about the client's own bookkeeping. The `serve`
fixture cancels a handler whose client went away, which is how a hedge that
lost is seen to stop its server-side work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

import microcall
from microcall import AttemptKind, Strategy
from tests.conftest import Serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

QUICK_BACKOFF = microcall.Backoff(base=0.001, cap=0.002)


class Recorder:
    """Wraps a handler; keeps every request it received and when."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[web.Request] = []
        self.times: list[float] = []

    @property
    def hits(self) -> int:
        return len(self.requests)

    def header(self, name: str) -> list[str]:
        return [request.headers[name] for request in self.requests]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.times.append(time.monotonic())
        return await self._handler(request)


async def serve_recorder(serve: Serve, handler: Handler) -> tuple[str, Recorder]:
    recorder = Recorder(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    return await serve(app), recorder


def statuses(*codes: int, headers: dict[str, str] | None = None) -> Handler:
    """A handler answering ``codes`` in order, then the last one forever."""
    remaining = list(codes)

    async def handler(request: web.Request) -> web.Response:
        code = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return web.Response(status=code, text=str(code), headers=headers)

    return handler


# ------------------------------------------------------------------ hedging


async def test_hedging_cancels_the_loser_on_the_server(serve: Serve) -> None:
    loser_cancelled = asyncio.Event()

    async def first_slow(request: web.Request) -> web.Response:
        if recorder.hits == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                loser_cancelled.set()
                raise
        return web.Response(text=f"hit {recorder.hits}")

    base, recorder = await serve_recorder(serve, first_slow)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=microcall.hedged(0.05)) as client:
        response = await client.get("/book")
        # The server stops the loser's work while the client is still open:
        # the loser's connection was closed, not parked in the pool.
        await asyncio.wait_for(loser_cancelled.wait(), timeout=2.0)

    assert response.status_code == 200
    assert response.text == "hit 2"
    first, hedge = response.attempts
    assert (first.kind, first.cancelled) == (AttemptKind.FIRST, True)
    assert (hedge.kind, hedge.status) == (AttemptKind.HEDGE, 200)
    assert recorder.hits == 2


async def test_a_loser_cancelled_mid_body_has_its_connection_closed(serve: Serve) -> None:
    loser_cancelled = asyncio.Event()

    async def first_stalls_mid_body(request: web.Request) -> web.StreamResponse:
        if recorder.hits == 1:
            response = web.StreamResponse(headers={"Content-Length": "100"})
            await response.prepare(request)
            await response.write(b"x" * 10)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                loser_cancelled.set()
                raise
        return web.Response(text=f"hit {recorder.hits}")

    base, recorder = await serve_recorder(serve, first_stalls_mid_body)
    limits = microcall.Limits(max_connections=2)
    async with microcall.AsyncClient(
        base, timeout=5.0, limits=limits, strategy=microcall.hedged(0.05)
    ) as client:
        response = await client.get("/")
        await asyncio.wait_for(loser_cancelled.wait(), timeout=2.0)
        # Had the half-read connection gone back to the pool, these would read
        # the rest of the loser's body as their own response.
        later = [(await client.get("/")).text for _ in range(10)]
    assert response.text == "hit 2"
    assert later == [f"hit {n}" for n in range(3, 13)]


async def test_the_first_accepted_outcome_wins_not_the_first_outcome(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        hit = recorder.hits
        if hit == 1:
            await asyncio.sleep(5)
            return web.Response(text="slow")
        if hit == 2:
            return web.Response(status=503, text="failed fast")  # retriable: not a winner
        return web.Response(text="accepted")

    base, recorder = await serve_recorder(serve, handler)
    strategy = microcall.hedged(0.05, attempts=3)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")

    assert response.text == "accepted"
    assert [(a.kind, a.status, a.cancelled) for a in response.attempts] == [
        (AttemptKind.FIRST, None, True),
        (AttemptKind.HEDGE, 503, False),
        (AttemptKind.HEDGE, 200, False),
    ]
    assert recorder.hits == 3


async def test_an_answer_that_is_not_a_failure_wins_the_race(serve: Serve) -> None:
    # A 404 is an answer: it wins over a 200 still on its way.
    async def handler(request: web.Request) -> web.Response:
        if recorder.hits == 1:
            await asyncio.sleep(5)
            return web.Response(text="slow")
        return web.Response(status=404, text="no such book")

    base, recorder = await serve_recorder(serve, handler)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=microcall.hedged(0.05)) as client:
        response = await client.get("/")
    assert response.status_code == 404
    assert [a.cancelled for a in response.attempts] == [True, False]


# ------------------------------------------------------------------ what is retried

# The hedge delay is long so that only failures start another attempt: a slow
# first answer on a busy machine must not look like a retry.
STRATEGIES: list[Strategy] = [
    microcall.retry(4, backoff=QUICK_BACKOFF),
    microcall.hedged(2.0, attempts=4),
]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retriable_statuses_are_retried_and_the_last_response_returned(
    serve: Serve, status: int
) -> None:
    base, recorder = await serve_recorder(serve, statuses(status))
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")
    assert response.status_code == status
    assert recorder.hits == 3
    assert [a.status for a in response.attempts] == [status] * 3


@pytest.mark.parametrize("status", [400, 404, 409])
async def test_client_errors_are_answers_returned_at_once(serve: Serve, status: int) -> None:
    base, recorder = await serve_recorder(serve, statuses(status))
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")
    assert response.status_code == status
    assert recorder.hits == 1
    assert len(response.attempts) == 1


async def test_a_retry_that_succeeds_returns_the_success(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(503, 502, 200))
    strategy = microcall.retry(5, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert [a.status for a in response.attempts] == [503, 502, 200]
    assert [a.kind for a in response.attempts] == [
        AttemptKind.FIRST,
        AttemptKind.RETRY,
        AttemptKind.RETRY,
    ]
    assert recorder.hits == 3


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["retry", "hedged"])
async def test_do_not_retry_header_ends_the_call(serve: Serve, strategy: Strategy) -> None:
    base, recorder = await serve_recorder(serve, statuses(503, headers={"X-Do-Not-Retry": "1"}))
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")
    assert response.status_code == 503
    assert recorder.hits == 1
    assert len(response.attempts) == 1


async def test_without_the_do_not_retry_header_the_same_status_is_retried(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(503))
    strategy = microcall.retry(4, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        await client.get("/")
    assert recorder.hits == 4


# ------------------------------------------------------------------ Retry-After


async def test_retry_after_is_honoured_within_the_deadline(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(429, 200, headers={"Retry-After": "1"}))
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert recorder.hits == 2
    # The backoff alone would have waited a millisecond; the server asked for a second.
    assert recorder.times[1] - recorder.times[0] >= 0.95


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["retry", "hedged"])
async def test_retry_after_beyond_the_deadline_ends_with_the_last_response(
    serve: Serve, strategy: Strategy
) -> None:
    base, recorder = await serve_recorder(serve, statuses(503, headers={"Retry-After": "30"}))
    timeout = 3.0
    async with microcall.AsyncClient(base, timeout=timeout, strategy=strategy) as client:
        began = time.monotonic()
        response = await client.get("/")
        elapsed = time.monotonic() - began
    assert response.status_code == 503
    assert recorder.hits == 1
    # Waiting cannot help, so the call does not sit out its deadline either.
    assert elapsed < timeout / 2


# ------------------------------------------------------------------ POST


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["retry", "hedged"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_post_is_never_sent_twice_by_default(
    serve: Serve, strategy: Strategy, method: str
) -> None:
    base, recorder = await serve_recorder(serve, statuses(503))
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.request(method, "/orders", json={"book": 7})
    assert response.status_code == 503
    assert recorder.hits == 1
    assert len(response.attempts) == 1


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["retry", "hedged"])
@pytest.mark.parametrize(
    "opt_in",
    [{"idempotent": True}, {"headers": {"Idempotency-Key": "order-7"}}],
    ids=["idempotent", "idempotency-key"],
)
async def test_post_is_repeated_when_the_caller_opts_in(
    serve: Serve, strategy: Strategy, opt_in: dict[str, object]
) -> None:
    base, recorder = await serve_recorder(serve, statuses(503))
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.post("/orders", json={"book": 7}, **opt_in)  # type: ignore[arg-type]
    assert response.status_code == 503
    assert recorder.hits == 4
    assert all(request.method == "POST" for request in recorder.requests)


async def slow_ok(request: web.Request) -> web.Response:
    await asyncio.sleep(0.2)  # long past the hedge delays (20 and 40 ms)
    return web.Response()


@pytest.mark.parametrize(
    ("opt_in", "hits"),
    [({}, 1), ({"idempotent": True}, 3), ({"headers": {"Idempotency-Key": "order-7"}}, 3)],
    ids=["default", "idempotent", "idempotency-key"],
)
async def test_a_slow_post_is_hedged_only_when_the_caller_opts_in(
    serve: Serve, opt_in: dict[str, object], hits: int
) -> None:
    base, recorder = await serve_recorder(serve, slow_ok)
    strategy = microcall.hedged(0.02, attempts=3)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        response = await client.post("/orders", json={"book": 7}, **opt_in)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert recorder.hits == hits


async def test_idempotent_false_stops_a_get_from_retrying(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(503))
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        await client.get("/", idempotent=False)
    assert recorder.hits == 1


# ------------------------------------------------------------------ headers


async def test_request_timeout_header_decreases_across_retries(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(503, 503, 200))
    backoff = microcall.Backoff(base=0.05, jitter=False)
    strategy = microcall.retry(3, backoff=backoff)
    async with microcall.AsyncClient(base, timeout=2.0, strategy=strategy) as client:
        await client.get("/")
    sent = [float(value) for value in recorder.header("X-Request-Timeout")]
    assert len(sent) == 3
    assert 0 < sent[2] < sent[1] < sent[0] <= 2.0
    # At least the backoff between them (50 ms, then 100 ms) came off the budget.
    assert sent[0] - sent[1] >= 0.05 - 0.001
    assert sent[1] - sent[2] >= 0.1 - 0.001


async def test_request_timeout_header_is_the_hedges_own_remaining_time(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        if recorder.hits == 1:
            await asyncio.sleep(5)
        return web.Response()

    base, recorder = await serve_recorder(serve, handler)
    async with microcall.AsyncClient(base, timeout=2.0, strategy=microcall.hedged(0.1)) as client:
        await client.get("/")
    first, hedge = (float(value) for value in recorder.header("X-Request-Timeout"))
    assert first <= 2.0
    assert hedge <= first - 0.1 + 0.001


async def test_request_timeout_header_is_capped_by_the_attempt_timeout(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(200))
    strategy = microcall.retry(3, attempt_timeout=0.5)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        await client.get("/")
    [sent] = recorder.header("X-Request-Timeout")
    assert float(sent) == pytest.approx(0.5, abs=0.001)


async def test_priority_header_comes_from_the_call_then_the_context_then_the_client(
    serve: Serve,
) -> None:
    base, recorder = await serve_recorder(serve, statuses(200))
    async with microcall.AsyncClient(base, timeout=5.0) as plain:
        await plain.get("/")
    async with microcall.AsyncClient(base, timeout=5.0, priority="low") as client:
        await client.get("/")
        with microcall.priority("high"):
            await client.get("/")
            await client.get("/", priority="low")
        await client.get("/", priority=microcall.Priority.HIGH)
    [unset, *chosen] = recorder.requests
    assert "X-Request-Priority" not in unset.headers  # the server's default applies
    assert [request.headers["X-Request-Priority"] for request in chosen] == [
        "low",
        "high",
        "low",
        "high",
    ]


async def test_every_attempt_carries_the_priority(serve: Serve) -> None:
    base, recorder = await serve_recorder(serve, statuses(503, 503, 200))
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(base, timeout=5.0, strategy=strategy) as client:
        with microcall.priority("low"):
            await client.get("/")
    assert recorder.header("X-Request-Priority") == ["low", "low", "low"]
