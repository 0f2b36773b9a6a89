"""AsyncChannel against real grpc.aio servers on loopback: the generated stub, unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

import microcall
from microcall.errors import CircuitOpen, DeadlineExceeded, GrpcStatusError
from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import PUSHBACK_METADATA, AsyncChannel, ChannelOptions, RpcMethod
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import CircuitBreakerConfig
from tests.grpc.conftest import Backend, ServeGrpc, Step
from tests.server._waiting import eventually

REQUEST = RecommendationRequest(user_id=1, max_results=3)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FAST_RETRY = microcall.retry(3, backoff=microcall.Backoff(base=0.001))


async def test_the_deadline_and_priority_in_context_reach_the_server(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(timeout=3.0)) as channel:
        stub = RecommendationsStub(channel)
        reply = await stub.Recommend(REQUEST)
        with microcall.deadline(0.8), microcall.priority("low"):
            await stub.Recommend(REQUEST)
        await stub.Recommend(REQUEST, timeout=0.5, priority="high")
    assert reply.recommendations[0].title == "call 1"
    plain, inherited, own = backend.calls
    assert plain.remaining is not None
    assert 2.0 < plain.remaining < 3.1
    assert "x-request-priority" not in plain.metadata  # none chosen: the server's default
    assert inherited.remaining is not None
    assert inherited.remaining < 0.85  # grpc reports a few ms of its own slack
    assert inherited.metadata["x-request-priority"] == "low"
    assert own.remaining is not None
    assert own.remaining < 0.55
    assert own.metadata["x-request-priority"] == "high"


async def test_the_channel_priority_goes_unless_the_context_or_call_says_otherwise(
    serve_grpc: ServeGrpc,
) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(priority="low")) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST)  # the straight path
        with microcall.priority("high"):
            await stub.Recommend(REQUEST)
        await stub.Recommend(REQUEST, priority="normal")  # type: ignore[call-arg]
    assert [call.metadata["x-request-priority"] for call in backend.calls] == [
        "low",
        "high",
        "normal",
    ]


async def test_a_call_timeout_never_outlives_the_context_deadline(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target) as channel:
        with microcall.deadline(0.3):
            await RecommendationsStub(channel).Recommend(REQUEST, timeout=5.0)
    assert backend.calls[0].remaining is not None
    assert backend.calls[0].remaining < 0.35


async def test_an_expired_context_fails_without_sending(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target) as channel:
        with microcall.deadline(0.0), pytest.raises(DeadlineExceeded):
            await RecommendationsStub(channel).Recommend(REQUEST)
    assert backend.calls == []


async def test_an_answer_status_is_raised_with_the_status_kept(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(code=grpc.StatusCode.NOT_FOUND, details="no such user")])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        with pytest.raises(GrpcStatusError) as raised:
            await RecommendationsStub(channel).Recommend(REQUEST)
    error = raised.value
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such user"
    assert [a.code for a in error.attempts] == ["NOT_FOUND"]
    assert len(backend.calls) == 1  # an answer is not retried


async def test_unavailable_is_retried_until_an_answer(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(code=UNAVAILABLE), Step(code=UNAVAILABLE)])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        call = RecommendationsStub(channel).Recommend(REQUEST)
        reply = await call
        assert await call.code() is grpc.StatusCode.OK
    assert reply.recommendations[0].title == "call 3"
    assert [a.code for a in call.attempts] == ["UNAVAILABLE", "UNAVAILABLE", "OK"]


async def test_a_negative_pushback_stops_the_retries(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(code=UNAVAILABLE, trailing=((PUSHBACK_METADATA, "-1"),))])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        with pytest.raises(GrpcStatusError) as raised:
            await RecommendationsStub(channel).Recommend(REQUEST)
    assert raised.value.code() is UNAVAILABLE
    assert dict(raised.value.trailing_metadata())[PUSHBACK_METADATA] == "-1"
    assert len(backend.calls) == 1


async def test_a_call_marked_not_idempotent_is_sent_once(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(code=UNAVAILABLE)])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        with pytest.raises(GrpcStatusError):
            await RecommendationsStub(channel).Recommend(REQUEST, idempotent=False)
    assert len(backend.calls) == 1


async def test_hedging_wins_with_the_fast_copy_and_cancels_the_slow_one(
    serve_grpc: ServeGrpc,
) -> None:
    backend = Backend([Step(), Step(delay=5.0), Step()])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=microcall.hedged(0.05))) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST)  # connected: the next two arrive in the order sent
        call = stub.Recommend(REQUEST)
        reply = await call
        # The loser's handler is cancelled on the server.
        await eventually(lambda: backend.cancelled == 1)
    assert reply.recommendations[0].title == "call 3"
    assert [(a.kind, a.cancelled) for a in call.attempts] == [
        (microcall.AttemptKind.FIRST, True),
        (microcall.AttemptKind.HEDGE, False),
    ]


async def test_a_retry_goes_to_the_replica_that_works(
    serve_grpc: ServeGrpc, refused_target: str
) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    options = ChannelOptions(strategy=FAST_RETRY, balancer=BalancerConfig(mode="round_robin"))
    async with AsyncChannel([refused_target, target], options) as channel:
        stub = RecommendationsStub(channel)
        calls = [stub.Recommend(REQUEST) for _ in range(6)]
        for call in calls:
            await call
    assert len(backend.calls) == 6
    tried = [[a.endpoint for a in call.attempts] for call in calls]
    assert [refused_target, target] in tried  # a failed attempt moved on to the other one


async def test_a_deadline_that_passes_raises_deadline_exceeded(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(delay=5.0)])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        with pytest.raises(DeadlineExceeded) as raised:
            await RecommendationsStub(channel).Recommend(REQUEST, timeout=0.1)
    assert isinstance(raised.value, TimeoutError)
    assert [a.code for a in raised.value.attempts] == ["DEADLINE_EXCEEDED"]


async def test_an_open_breaker_fails_fast(refused_target: str) -> None:
    breaker = CircuitBreakerConfig(minimum_throughput=3, break_duration=30.0)
    async with AsyncChannel(refused_target, ChannelOptions(breaker=breaker)) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(3):
            with pytest.raises(GrpcStatusError):
                await stub.Recommend(REQUEST)
        with pytest.raises(CircuitOpen):
            await stub.Recommend(REQUEST)
        endpoint = channel.targets.endpoints[0]
        assert endpoint.breaker is not None
        assert endpoint.breaker.rejected == 1


async def test_many_concurrent_calls(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target) as channel:
        stub = RecommendationsStub(channel)
        replies = await asyncio.gather(*(stub.Recommend(REQUEST) for _ in range(100)))
    assert len(replies) == 100
    assert len(backend.calls) == 100


async def test_a_server_stream_gets_the_deadline_and_metadata(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target) as channel:
        with microcall.deadline(0.7), microcall.priority("low"):
            stream = RecommendationsStub(channel).RecommendStream(REQUEST)
            titles = [book.title async for book in stream]
    assert titles == ["book 0", "book 1", "book 2"]
    seen = backend.calls[0]
    assert seen.remaining is not None
    assert seen.remaining < 0.75
    assert seen.metadata["x-request-priority"] == "low"
    assert [a.code for a in stream.attempts] == ["OK"]


async def test_a_stream_that_fails_midway_is_not_retried(serve_grpc: ServeGrpc) -> None:
    backend = Backend([Step(code=UNAVAILABLE, details="gone", messages=2)])
    target = await serve_grpc(backend)
    async with AsyncChannel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        received: list[int] = []
        with pytest.raises(GrpcStatusError) as raised:
            await read_into(received, RecommendationsStub(channel).RecommendStream(REQUEST))
    assert received == [0, 1]
    assert raised.value.code() is UNAVAILABLE
    assert len(backend.calls) == 1


async def read_into(received: list[int], stream: Any) -> None:
    async for book in stream:
        received.append(book.id)


async def test_a_stream_is_refused_by_an_open_breaker(refused_target: str) -> None:
    breaker = CircuitBreakerConfig(minimum_throughput=2, break_duration=30.0)
    async with AsyncChannel(refused_target, ChannelOptions(breaker=breaker)) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(2):
            with pytest.raises(GrpcStatusError):
                async for _book in stub.RecommendStream(REQUEST):
                    pass
        with pytest.raises(CircuitOpen):
            async for _book in stub.RecommendStream(REQUEST):
                pass


class Recorder:
    """An observer that follows calls and adds a traceparent to each attempt."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def call_started(self, method: RpcMethod) -> Recorder:
        self.events.append(("call", method.name))
        return self

    def attempt_started(self, index: int, kind: Any, target: str, metadata: list[Any]) -> Recorder:
        metadata.append(("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        self.events.append(("attempt", kind))
        return self

    def attempt_ended(self, attempt: Any) -> None:
        self.events.append(("attempt ended", attempt.code))

    def call_ended(self, response: object, error: object, attempts: Any) -> None:
        self.events.append(("call ended", type(error).__name__ if error else "ok"))


async def test_observers_follow_calls_and_their_metadata_reaches_the_server(
    serve_grpc: ServeGrpc,
) -> None:
    backend = Backend([Step(code=UNAVAILABLE)])
    target = await serve_grpc(backend)
    recorder = Recorder()
    options = ChannelOptions(strategy=FAST_RETRY)
    async with AsyncChannel(target, options, observers=[recorder]) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST)
        books = [book async for book in stub.RecommendStream(REQUEST)]
    assert len(books) == 3
    assert recorder.events == [
        ("call", "Recommend"),
        ("attempt", microcall.AttemptKind.FIRST),
        ("attempt ended", "UNAVAILABLE"),
        ("attempt", microcall.AttemptKind.RETRY),
        ("attempt ended", "OK"),
        ("call ended", "ok"),
        ("call", "RecommendStream"),
        ("attempt", microcall.AttemptKind.FIRST),
        ("attempt ended", "OK"),
        ("call ended", "ok"),
    ]
    assert all("traceparent" in seen.metadata for seen in backend.calls)


SLOW_RETRY = microcall.retry(3, backoff=microcall.Backoff(base=5.0, cap=5.0, jitter=False))


async def test_closing_the_channel_ends_a_call_in_its_backoff_at_once_with_cancelled(
    serve_grpc: ServeGrpc,
) -> None:
    """Not after the backoff, with grpc.aio's own "Channel is closed" error: CANCELLED, typed."""
    target = await serve_grpc(Backend([Step(code=UNAVAILABLE)] * 3))
    recorder = Recorder()
    options = ChannelOptions(strategy=SLOW_RETRY, budget=None)
    channel = AsyncChannel(target, options, observers=[recorder])
    waiting = asyncio.ensure_future(RecommendationsStub(channel).Recommend(REQUEST, timeout=30))
    # The first attempt failed: the call waits out its 5 s backoff.
    await eventually(lambda: ("attempt ended", "UNAVAILABLE") in recorder.events)
    began = asyncio.get_running_loop().time()
    await channel.close()
    with pytest.raises(GrpcStatusError) as closed:
        await waiting
    assert asyncio.get_running_loop().time() - began < 2.0
    assert closed.value.code() is grpc.StatusCode.CANCELLED
    assert closed.value.details() == "the channel was closed"
    assert [attempt.code for attempt in closed.value.attempts] == ["UNAVAILABLE"]


async def test_closing_the_channel_ends_a_call_in_flight_with_cancelled_not_a_bare_cancellation(
    serve_grpc: ServeGrpc,
) -> None:
    target = await serve_grpc(Backend([Step(delay=5.0)] * 2))
    for strategy in (microcall.single(), SLOW_RETRY):
        channel = AsyncChannel(target, ChannelOptions(strategy=strategy))
        call = asyncio.ensure_future(RecommendationsStub(channel).Recommend(REQUEST, timeout=30))
        await asyncio.sleep(0.3)
        await channel.close()
        with pytest.raises(GrpcStatusError) as closed:
            await call
        assert closed.value.code() is grpc.StatusCode.CANCELLED


async def test_a_call_on_a_closed_channel_is_a_usage_error(serve_grpc: ServeGrpc) -> None:
    target = await serve_grpc(Backend())
    channel = AsyncChannel(target)
    stub = RecommendationsStub(channel)
    await channel.close()
    with pytest.raises(microcall.UsageError, match="this channel is closed"):
        await stub.Recommend(REQUEST)
    with pytest.raises(microcall.UsageError, match="this channel is closed"):
        stub.RecommendStream(REQUEST)


async def test_each_hop_sees_less_time_than_the_one_before_past_a_second(
    serve_grpc: ServeGrpc,
) -> None:
    """grpc rounds a timeout past 1 s up to 10 ms on the wire: 1.0 s left reached the server as 1.0095."""
    backend = Backend()
    target = await serve_grpc(backend)
    async with AsyncChannel(target) as channel:
        stub = RecommendationsStub(channel)
        for left in (0.9999, 1.0, 1.5, 2.0):
            with microcall.deadline(left):
                await stub.Recommend(REQUEST)
    for left, seen in zip((0.9999, 1.0, 1.5, 2.0), backend.calls, strict=True):
        assert seen.remaining is not None
        assert seen.remaining < left
