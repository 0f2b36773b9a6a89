"""microcall's channels answer as grpcio's do: cancellation, errors, keywords, stream calls.

Each behaviour is checked on grpcio's own channel first, as the reference,
then on microcall's: code written against grpcio keeps working.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

import microcall
from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel, Channel, ChannelOptions, ObserverAdapter
from microcall.policy.breaker import CircuitBreakerConfig
from tests.grpc.conftest import Backend, BlockingBackend, ServeBlocking, ServeGrpc, Step
from tests.server._waiting import eventually

REQUEST = RecommendationRequest(user_id=1, max_results=3)
CANCELLED = grpc.StatusCode.CANCELLED
HEDGED = microcall.hedged(delay=0.05)


# ------------------------------------------------------------ grpc.aio: cancel before await


async def _cancel_before_await(stub: RecommendationsStub) -> tuple[Any, ...]:
    call = stub.Recommend(REQUEST)
    cancelled = call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    code = await asyncio.wait_for(call.code(), 5)
    return cancelled, call.cancelled(), call.done(), code


@pytest.mark.parametrize("strategy", [None, HEDGED], ids=["direct", "planned"])
async def test_a_call_cancelled_before_it_is_awaited_ends_cancelled_as_grpc_aio_does(
    serve_grpc: ServeGrpc, strategy: microcall.Strategy | None
) -> None:
    target = await serve_grpc(Backend())
    async with grpc.aio.insecure_channel(target) as plain:
        expected = await _cancel_before_await(RecommendationsStub(plain))
    options = ChannelOptions(strategy=strategy or microcall.SingleAttempt())
    async with AsyncChannel(target, options) as channel:
        got = await _cancel_before_await(RecommendationsStub(channel))
    assert expected == (True, True, True, CANCELLED)
    assert got == expected


async def test_a_retrying_call_cancelled_in_its_backoff_ends_at_once(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(code=grpc.StatusCode.UNAVAILABLE)])
    target = await serve_grpc(backend)
    slow = microcall.retry(3, backoff=microcall.Backoff(base=30.0, cap=30.0, jitter=False))
    async with AsyncChannel(target, ChannelOptions(strategy=slow, timeout=60)) as channel:
        call = RecommendationsStub(channel).Recommend(REQUEST)
        waiting = asyncio.ensure_future(call)
        await eventually(lambda: bool(backend.calls))
        await asyncio.sleep(0.05)  # the first attempt failed: the call sleeps in its backoff
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)
        assert await call.code() is CANCELLED
    assert len(backend.calls) == 1


# ------------------------------------------------------------ errors are grpc.RpcError


async def test_errors_are_grpc_rpc_errors_with_grpcs_code_and_details(
    serve_grpc: ServeGrpc,
) -> None:
    backend = Backend([Step(code=grpc.StatusCode.NOT_FOUND, details="no such user")] * 2)
    target = await serve_grpc(backend)
    async with grpc.aio.insecure_channel(target) as plain:
        with pytest.raises(grpc.RpcError) as reference:
            await RecommendationsStub(plain).Recommend(REQUEST)
    async with AsyncChannel(target) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            await RecommendationsStub(channel).Recommend(REQUEST)
        with pytest.raises(grpc.RpcError) as expired:
            await RecommendationsStub(channel).Recommend(REQUEST, timeout=0.0001)
    error: Any = raised.value
    expected: Any = reference.value
    assert isinstance(error, microcall.GrpcStatusError)
    assert (error.code(), error.details()) == (expected.code(), expected.details())
    assert error.trailing_metadata() == ()
    assert "NOT_FOUND" in error.debug_error_string()
    late: Any = expired.value
    assert isinstance(late, microcall.DeadlineExceeded)
    assert (late.code(), late.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


async def test_a_servers_own_deadline_exceeded_keeps_its_details_and_trailers(
    serve_grpc: ServeGrpc,
) -> None:
    """A handler that gave up on a dependency: its words, as grpcio gives them, not grpc's own."""
    step = Step(
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        details="inventory lookup timed out",
        trailing=(("x-failed-dependency", "inventory"),),
    )
    target = await serve_grpc(Backend([step] * 2))
    async with grpc.aio.insecure_channel(target) as plain:
        with pytest.raises(grpc.RpcError) as reference:
            await RecommendationsStub(plain).Recommend(REQUEST, timeout=10)
    async with AsyncChannel(target) as channel:
        with pytest.raises(microcall.DeadlineExceeded) as raised:
            await RecommendationsStub(channel).Recommend(REQUEST, timeout=10)
    error: Any = raised.value
    expected: Any = reference.value
    assert (error.code(), error.details()) == (expected.code(), expected.details())
    assert tuple(error.trailing_metadata()) == tuple(expected.trailing_metadata())
    assert error.details() == "inventory lookup timed out"


async def test_a_call_refused_by_the_breaker_is_a_grpc_rpc_error_unavailable(
    refused_target: str,
) -> None:
    breaker = CircuitBreakerConfig(minimum_throughput=3, break_duration=30.0)
    async with AsyncChannel(refused_target, ChannelOptions(breaker=breaker)) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                await stub.Recommend(REQUEST)
        with pytest.raises(grpc.RpcError) as raised:
            await stub.Recommend(REQUEST)
    error: Any = raised.value
    assert isinstance(error, microcall.CircuitOpen)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------ the blocking future


def _cancel_running(stub: Any, started: threading.Event) -> tuple[Any, ...]:
    future = stub.Recommend.future(REQUEST, timeout=10)
    assert started.wait(5)
    begun = time.monotonic()
    cancelled = future.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    took = time.monotonic() - begun
    return (cancelled, future.cancelled(), future.done(), future.code()), took


class _Slow(BlockingBackend):
    def __init__(self) -> None:
        super().__init__([Step(delay=3.0)] * 4)
        self.started = threading.Event()

    def Recommend(self, request: Any, context: Any) -> Any:
        self.started.set()
        return super().Recommend(request, context)


@pytest.mark.parametrize("strategy", [None, HEDGED], ids=["direct", "planned"])
def test_the_blocking_future_cancels_a_running_call_at_once_as_grpcio_does(
    serve_blocking_grpc: ServeBlocking, strategy: microcall.Strategy | None
) -> None:
    backend = _Slow()
    target = serve_blocking_grpc(backend)
    with grpc.insecure_channel(target) as plain:
        expected, _ = _cancel_running(RecommendationsStub(plain), backend.started)
    backend.started.clear()
    options = ChannelOptions(strategy=strategy or microcall.SingleAttempt(), timeout=10)
    with Channel(target, options) as channel:
        got, took = _cancel_running(RecommendationsStub(channel), backend.started)
    assert expected == (True, True, True, CANCELLED)
    assert got == expected
    assert took < 2.0  # not the 3 s the handler sleeps


def test_a_future_cancelled_before_it_starts_reports_cancelled(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    target = serve_blocking_grpc(BlockingBackend())
    with Channel(target) as channel:
        blocker = threading.Event()
        # Every worker of the channel's executor busy: the call waits its turn.
        executor = channel._executor_for()
        held = [executor.submit(blocker.wait) for _ in range(64)]
        future = RecommendationsStub(channel).Recommend.future(REQUEST)
        assert future.cancel()
        blocker.set()
        futures.wait(held)
    assert future.cancelled()
    assert future.done()
    assert future.code() is CANCELLED
    with pytest.raises(grpc.FutureCancelledError):
        future.result()


# ------------------------------------------------------------ streams


class _Echo(BlockingBackend):
    def RecommendStream(self, request: Any, context: Any) -> Iterator[Any]:
        return super().RecommendStream(request, context)


def test_a_blocking_response_stream_is_a_grpc_future_as_grpcios_is(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    target = serve_blocking_grpc(_Echo())
    with grpc.insecure_channel(target) as plain:
        reference = RecommendationsStub(plain).RecommendStream(REQUEST)
        assert [book.id for book in reference] == [0, 1, 2]
    with Channel(target) as channel:
        stream = RecommendationsStub(channel).RecommendStream(REQUEST)
        assert isinstance(stream, grpc.Future)
        assert isinstance(reference, grpc.Future)
        assert [book.id for book in stream] == [0, 1, 2]
        assert stream.done()
        assert stream.exception() is None
        assert stream.code() is grpc.StatusCode.OK


def test_a_blocking_stream_under_the_floor_fails_on_its_first_next(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    target = serve_blocking_grpc(_Echo())
    with Channel(target) as channel:
        stream = RecommendationsStub(channel).RecommendStream(REQUEST, timeout=0.0001)
        assert stream.done()
        assert stream.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)
    assert isinstance(raised.value, microcall.DeadlineExceeded)
    # The call says what its error says, as grpcio's do.
    assert stream.details() == raised.value.details() == "Deadline Exceeded"


async def test_a_refused_call_reports_the_details_its_error_does(serve_grpc: ServeGrpc) -> None:
    target = await serve_grpc(Backend())
    async with AsyncChannel(target) as channel:
        stub = RecommendationsStub(channel)
        call = stub.Recommend(REQUEST, timeout=0.0001)
        with pytest.raises(microcall.DeadlineExceeded) as raised:
            await call
        stream = stub.RecommendStream(REQUEST, timeout=0.0001)
        with pytest.raises(microcall.DeadlineExceeded):
            await stream.read()
    error: Any = raised.value
    assert await call.details() == await stream.details() == error.details()


async def test_streaming_callables_take_grpcs_request_iterator_keyword(
    serve_grpc: ServeGrpc, serve_blocking_grpc: ServeBlocking
) -> None:
    # Recommendations has no client stream: call a unary-stream method's
    # callable as a stream-unary one would be called, and check the keyword lands.
    target = await serve_grpc(Backend())
    async with AsyncChannel(target) as channel:
        stream = RecommendationsStub(channel).RecommendStream(request_iterator=REQUEST)
        assert [book.id async for book in stream] == [0, 1, 2]
    blocking = serve_blocking_grpc(_Echo())
    with Channel(blocking) as sync_channel:
        replies = RecommendationsStub(sync_channel).RecommendStream(request_iterator=REQUEST)
        assert [book.id for book in replies] == [0, 1, 2]


# ------------------------------------------------------------ priority metadata


@pytest.mark.parametrize("given", ["low", "high"])
async def test_a_callers_own_priority_metadata_is_kept_when_microcall_has_none(
    serve_grpc: ServeGrpc, given: str
) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    own = (("x-request-priority", given),)
    async with AsyncChannel(target) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST, metadata=own)
        with microcall.priority("normal"):
            await stub.Recommend(REQUEST, metadata=own)
        await stub.Recommend(REQUEST, metadata=own, priority="normal")
    kept, inherited, chosen = backend.calls
    assert kept.metadata["x-request-priority"] == given
    assert inherited.metadata["x-request-priority"] == "normal"
    assert chosen.metadata["x-request-priority"] == "normal"


def test_the_blocking_channel_keeps_the_callers_priority_metadata_too(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    backend = BlockingBackend()
    target = serve_blocking_grpc(backend)
    with Channel(target) as channel:
        RecommendationsStub(channel).Recommend(REQUEST, metadata=(("x-request-priority", "low"),))
    assert backend.calls[0].metadata["x-request-priority"] == "low"


# ------------------------------------------------------------ observers that fail


class _Broken:
    def call_started(self, request: Any) -> Any:
        raise RuntimeError("broken observer")


async def test_an_observer_that_raises_on_every_call_logs_a_bounded_number_of_lines(
    serve_grpc: ServeGrpc, caplog: pytest.LogCaptureFixture
) -> None:
    target = await serve_grpc(Backend())
    caplog.set_level(logging.ERROR, logger="microcall")
    async with AsyncChannel(target, observers=[ObserverAdapter(_Broken())]) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(1000):
            await stub.Recommend(REQUEST)
    lines = [record for record in caplog.records if "broken" in str(record.exc_info)]
    assert 1 <= len(lines) <= 25
