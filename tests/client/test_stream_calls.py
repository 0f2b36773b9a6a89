"""Streamed calls through the engine: retries and hedges before the first byte, never after.

On every transport, against the real server of tests/transports/_stream_server.py:
a 503 retried before the body is handed over (its connection let go at
once, even when its own body never ends and the pool holds one connection),
a hedge whose loser is cancelled or discarded, observers that hear the call
end when the stream does, and a response cache that never stores a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import microcall
from microcall import (
    Backoff,
    CacheStatus,
    Limits,
    ReadError,
    Response,
    ResponseCache,
    UsageError,
    hedged,
    retry,
)
from microcall.observe.prometheus import ClientMetrics
from microcall.testing import MockTransport, Reply
from tests.faultserver import Fault, FaultServer, fault_server
from tests.transports._stream_server import (
    StreamServer,
    body_of,
    client,
    eventually,
    in_use,
    transports,
)

TRANSPORTS = transports()
QUICK_RETRY = retry(3, backoff=Backoff(base=0.01, cap=0.02))


@pytest.fixture(params=list(TRANSPORTS))
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return TRANSPORTS[request.param]


@pytest.fixture
async def server() -> AsyncIterator[StreamServer]:
    async with StreamServer() as running:
        yield running


# ---------------------------------------------------------------- retries and hedges


@pytest.mark.parametrize("kind", ["small", "stuck"])
async def test_a_503_is_retried_before_the_body_is_handed_over_and_lets_go_of_its_connection(
    make: Callable[..., Any], server: StreamServer, kind: str
) -> None:
    # One connection in the pool: the retry can only go out once the 503
    # let go of it, even when the 503's own body never ends ("stuck").
    transport = make(limits=Limits(max_connections=1))
    async with (
        client(server, transport, strategy=QUICK_RETRY, timeout=10) as c,
        c.stream("GET", f"/flaky/{kind}/{kind}") as response,
    ):
        assert response.status_code == 200
        assert [attempt.status for attempt in response.attempts] == [503, 200]
        assert await response.aread() == body_of(100_000)
    assert in_use(transport) == 0
    if kind == "stuck":
        await eventually(lambda: server.streams_cut == 1, "the 503's body was abandoned")


async def test_the_last_503_is_the_answer_and_its_body_can_be_read(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with (
        client(server, make(), strategy=retry(1), timeout=10) as c,
        c.stream("GET", "/flaky/last/small") as response,
    ):
        assert response.status_code == 503
        assert await response.aread() == b"try again"


async def test_nothing_is_retried_once_the_body_is_the_callers(
    make: Callable[..., Any],
) -> None:
    async with fault_server() as faults:
        async with (
            microcall.AsyncClient(
                faults.url(Fault.HALF_BODY), transport=make(), strategy=QUICK_RETRY
            ) as c,
            c.stream("GET", "/") as response,
        ):
            with pytest.raises(ReadError):
                await response.aread()
        assert faults.accepted[Fault.HALF_BODY] == 1
        assert len(response.attempts) == 1


async def test_a_hedge_wins_and_the_loser_still_waiting_for_its_head_is_cancelled(
    make: Callable[..., Any], server: StreamServer
) -> None:
    transport = make()
    async with client(server, transport, strategy=hedged(0.05), timeout=10) as c:
        async with c.stream("GET", "/slow-head/a") as response:
            assert [attempt.kind for attempt in response.attempts] == [
                microcall.AttemptKind.FIRST,
                microcall.AttemptKind.HEDGE,
            ]
            assert response.attempts[0].cancelled
            async for _ in response.aiter_bytes():
                break
            # The loser was stopped before its head: its handler saw the client leave.
            await eventually(lambda: server.streams_cut == 1, "the loser was cancelled")
        await eventually(lambda: server.streams_cut == 2, "the winner's stream was closed")
        assert in_use(transport) == 0
        await eventually(lambda: server.open_connections == 0, "every connection closed")


async def test_a_loser_whose_head_comes_while_it_lingers_is_closed_at_once(
    make: Callable[..., Any], server: StreamServer
) -> None:
    # The first attempt's head comes 0.3 s in, while it lingers after the
    # hedge won: its endless body is discarded, the winner's still flows.
    transport = make()
    strategy = hedged(0.05, linger=5.0)
    async with client(server, transport, strategy=strategy, timeout=10) as c:
        async with c.stream("GET", "/slow-head/b?delay=0.3") as response:
            await eventually(lambda: server.hits["slow-head/b"] == 2, "the hedge went out")
            await eventually(lambda: server.streams_cut == 1, "the loser's body was abandoned")
            received = 0
            async for piece in response.aiter_bytes():
                received += len(piece)
                if received > 1_000_000:
                    break
        assert in_use(transport) == 0
        await eventually(lambda: server.open_connections == 0, "every connection closed")


# ---------------------------------------------------------------- observers, cache, mocks


class Recorder:
    """An observer that keeps how each call ended."""

    def __init__(self) -> None:
        self.ended: list[tuple[Response | None, BaseException | None, int]] = []

    def call_started(self, request: microcall.Request) -> Recorder:
        return self

    def attempt_started(self, *args: object) -> None:
        return None

    def call_ended(
        self,
        response: Response | None,
        error: BaseException | None,
        attempts: Sequence[microcall.Attempt],
    ) -> None:
        self.ended.append((response, error, len(attempts)))


async def test_observers_hear_the_call_end_when_the_stream_ends(
    make: Callable[..., Any], server: StreamServer
) -> None:
    recorder = Recorder()
    async with client(server, make(), observers=[recorder]) as c:
        async with c.stream("GET", "/gated") as response:
            async for _ in response.aiter_bytes():
                break
            assert recorder.ended == []  # the head came, the body goes on
        assert recorder.ended == [(response, None, 1)]
        assert response.elapsed > 0

        server.gate.set()
        async with c.stream("GET", "/gated") as response:
            await response.aread()
            assert recorder.ended[-1] == (response, None, 1)  # at the body's end
        assert len(recorder.ended) == 2


async def test_observers_hear_a_stream_that_failed_or_was_cancelled(
    make: Callable[..., Any], server: StreamServer
) -> None:
    recorder = Recorder()
    async with (
        fault_server() as faults,
        microcall.AsyncClient(
            faults.url(Fault.HALF_BODY), transport=make(), observers=[recorder]
        ) as c,
    ):
        with pytest.raises(ReadError):
            async with c.stream("GET", "/") as response:
                await response.aread()
    assert recorder.ended[0][0] is None
    assert isinstance(recorder.ended[0][1], ReadError)

    reading = asyncio.Event()

    async def read_forever(c: microcall.AsyncClient) -> None:
        async with c.stream("GET", "/endless") as response:
            async for _ in response.aiter_bytes():
                reading.set()

    async with client(server, make(), observers=[recorder]) as c:
        task = asyncio.create_task(read_forever(c))
        await asyncio.wait_for(reading.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert isinstance(recorder.ended[1][1], asyncio.CancelledError)


async def test_a_streamed_response_is_never_cached(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with ResponseCache() as cache, client(server, make(), cache=cache) as c:
        path = "/length/100?fresh=1"
        assert (await c.get(path)).cache_status is CacheStatus.MISS  # stored
        for _ in range(2):
            async with c.stream("GET", path) as response:
                assert response.cache_status is None
                assert await response.aread() == body_of(100)
        assert server.hits["/length/100"] == 3  # every stream went to the server
        assert (await c.get(path)).cache_status is CacheStatus.HIT  # as stored before
        with pytest.raises(UsageError, match="never cached"):
            c.stream("GET", path, cache=microcall.CachePolicy())


async def test_a_transport_that_does_not_stream_still_serves_stream_calls() -> None:
    transport = MockTransport([Reply(status=200, content=b"line one\nline two\n")])
    async with (
        microcall.AsyncClient("http://svc", transport=transport, timeout=3) as c,
        c.stream("GET", "/feed") as response,
    ):
        assert [line async for line in response.aiter_lines()] == ["line one", "line two"]
    # The deadline travels downstream as for any call.
    assert float(transport.sent[0].headers["X-Request-Timeout"]) <= 3


async def test_stream_refuses_what_needs_the_whole_body_and_bad_limits() -> None:
    async with microcall.AsyncClient("http://svc", transport=MockTransport([])) as c:
        with pytest.raises(UsageError, match="response_model"):
            c.stream("GET", "/", response_model=dict)
        with pytest.raises(microcall.ConfigurationError, match="idle_timeout"):
            c.stream("GET", "/", idle_timeout=-1)
        with pytest.raises(microcall.ConfigurationError, match="needs an idle_timeout"):
            c.stream("GET", "/", body_timeout=float("inf"))
        call = c.stream("GET", "/", body_timeout=float("inf"), idle_timeout=1)
        with pytest.raises(microcall.ConfigurationError, match="unknown option"):
            c.stream("GET", "/", stream=True)  # type: ignore[call-arg]
    with pytest.raises(UsageError, match="closed"):
        c.stream("GET", "/")
    del call  # never entered: nothing was sent, and nothing is left behind


async def test_a_stream_call_is_entered_once(server: StreamServer) -> None:
    async with client(server, TRANSPORTS["h1"]()) as c:
        call = c.stream("GET", "/length/10")
        async with call as response:
            await response.aread()
        with pytest.raises(UsageError, match="entered once"):
            async with call:
                pass


async def test_two_tasks_cannot_read_one_stream_at_once(server: StreamServer) -> None:
    async with client(server, TRANSPORTS["h1"]()) as c, c.stream("GET", "/gated") as response:
        await response._next_piece()
        waiting = asyncio.create_task(response._next_piece())
        await asyncio.sleep(0.05)
        with pytest.raises(UsageError, match="another task"):
            await response._next_piece()
        server.gate.set()
        assert await waiting == b"rest"


async def test_faults_leave_no_connection_behind(make: Callable[..., Any]) -> None:
    faults: FaultServer
    async with fault_server() as faults:
        for fault in (Fault.HALF_BODY, Fault.RESET, Fault.GARBAGE, Fault.CLOSE):
            async with microcall.AsyncClient(faults.url(fault), transport=make(), timeout=5) as c:
                with pytest.raises(microcall.TransportError):
                    async with c.stream("GET", "/") as response:
                        await response.aread()
        await eventually(lambda: faults.open_connections == 0, "every connection closed")


async def test_the_call_duration_metric_covers_the_body(server: StreamServer) -> None:
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)

    def calls() -> float:
        return sum(
            sample.value
            for family in registry.collect()
            if family.name == "http_client_request_duration_seconds"
            for sample in family.samples
            if sample.name.endswith("_sum")
        )

    async with client(server, TRANSPORTS["h1"](), observers=[metrics]) as c:
        async with c.stream("GET", "/gated") as response:
            assert await response._next_piece()
            await asyncio.sleep(0.3)  # the body is still coming: the call goes on
            assert calls() == 0
            server.gate.set()
            rest = b"".join([piece async for piece in response.aiter_bytes()])
        assert rest == b"rest"
    assert calls() >= 0.3


async def test_a_stream_cut_by_its_clients_closing_says_so(
    make: Callable[..., Any], server: StreamServer
) -> None:
    """Not a ReadError blaming the server (retriable, and wrong): ClientClosed, as any call in flight.

    Both for a read waiting on the body as the client closes, and for one made after.
    """
    c = client(server, make())
    async with c.stream("GET", "/gated") as waited, c.stream("GET", "/gated") as later:
        pieces = waited.aiter_bytes()
        assert await anext(pieces) == b"first"

        async def read_on() -> list[bytes]:
            return [piece async for piece in pieces]

        waiting = asyncio.create_task(read_on())
        await asyncio.sleep(0.05)  # the task waits for the body's next bytes
        await c.aclose()
        with pytest.raises(microcall.ClientClosed, match="closed while this stream was open"):
            await waiting
        with pytest.raises(microcall.ClientClosed) as after:
            await later.aread()
        assert after.value.attempts == later.attempts
    server.gate.set()  # the handlers end: nobody is left to read them
