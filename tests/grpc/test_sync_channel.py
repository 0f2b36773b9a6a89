"""The blocking Channel against a real thread-pool grpc server on loopback."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

import microcall
from microcall.errors import DeadlineExceeded, GrpcStatusError
from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import PUSHBACK_METADATA, Channel, ChannelOptions
from microcall.policy.balancer import BalancerConfig
from microcall.testing import FakeClock
from tests.grpc.conftest import BlockingBackend, ServeBlocking, Step

REQUEST = RecommendationRequest(user_id=1, max_results=3)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FAST_RETRY = microcall.retry(3, backoff=microcall.Backoff(base=0.001))


def test_deadline_and_priority_from_the_thread_context(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend()
    target = serve_blocking_grpc(backend)
    with Channel(target, ChannelOptions(timeout=2.0)) as channel:
        stub = RecommendationsStub(channel)
        stub.Recommend(REQUEST)
        with microcall.deadline(0.6), microcall.priority("low"):
            reply, call = stub.Recommend.with_call(REQUEST)
    assert reply.recommendations[0].title == "call 2"
    assert call.code() is grpc.StatusCode.OK
    plain, inherited = backend.calls
    assert plain.remaining is not None
    assert 1.5 < plain.remaining < 2.1
    assert "x-request-priority" not in plain.metadata  # none chosen: the server's default
    assert inherited.remaining is not None
    assert inherited.remaining < 0.65
    assert inherited.metadata["x-request-priority"] == "low"


def test_the_channel_priority_goes_unless_the_context_or_call_says_otherwise(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    backend = BlockingBackend()
    target = serve_blocking_grpc(backend)
    with Channel(target, ChannelOptions(priority="low")) as channel:
        stub = RecommendationsStub(channel)
        stub.Recommend(REQUEST)
        with microcall.priority("high"):
            stub.Recommend(REQUEST)
        stub.Recommend(REQUEST, priority="normal")  # type: ignore[call-arg]
    assert [call.metadata["x-request-priority"] for call in backend.calls] == [
        "low",
        "high",
        "normal",
    ]


def test_statuses_become_microcall_errors(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend([Step(code=grpc.StatusCode.PERMISSION_DENIED, details="who?")])
    target = serve_blocking_grpc(backend)
    with (
        Channel(target, ChannelOptions(strategy=FAST_RETRY)) as channel,
        pytest.raises(GrpcStatusError) as raised,
    ):
        RecommendationsStub(channel).Recommend(REQUEST)
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details() == "who?"
    assert len(backend.calls) == 1


def test_retries_with_pushback_then_an_answer(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend([Step(code=UNAVAILABLE, trailing=((PUSHBACK_METADATA, "20"),))])
    target = serve_blocking_grpc(backend)
    with Channel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        reply, _ = RecommendationsStub(channel).Recommend.with_call(REQUEST)
    assert reply.recommendations[0].title == "call 2"


def test_a_retry_goes_to_the_replica_that_works(
    serve_blocking_grpc: ServeBlocking, refused_target: str
) -> None:
    backend = BlockingBackend()
    target = serve_blocking_grpc(backend)
    options = ChannelOptions(strategy=FAST_RETRY, balancer=BalancerConfig(mode="round_robin"))
    with Channel([refused_target, target], options) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(4):
            stub.Recommend(REQUEST)
    assert len(backend.calls) == 4


def test_hedging_answers_with_the_fast_copy(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend([Step(), Step(delay=2.0), Step()])
    target = serve_blocking_grpc(backend)
    with Channel(target, ChannelOptions(strategy=microcall.hedged(0.05))) as channel:
        stub = RecommendationsStub(channel)
        stub.Recommend(REQUEST)  # connected: the next two arrive in the order sent
        reply = stub.Recommend(REQUEST)
    assert reply.recommendations[0].title == "call 3"


def test_a_deadline_that_passes(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend([Step(delay=2.0)])
    target = serve_blocking_grpc(backend)
    with Channel(target) as channel, pytest.raises(DeadlineExceeded):
        RecommendationsStub(channel).Recommend(REQUEST, timeout=0.1)


def test_future_takes_the_deadline_of_the_thread_that_made_it(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    backend = BlockingBackend([Step(code=grpc.StatusCode.NOT_FOUND)])
    target = serve_blocking_grpc(backend)
    with Channel(target) as channel:
        stub = RecommendationsStub(channel)
        with microcall.deadline(0.5):
            failing = stub.Recommend.future(REQUEST)
            # One at a time: the backend's script answers the first call it sees.
            assert isinstance(failing.exception(timeout=5), GrpcStatusError)
            working = stub.Recommend.future(REQUEST)
            assert working.result(timeout=5).recommendations
            # A timeout of its own is capped by the context's, as any call's.
            capped = stub.Recommend.future(REQUEST, timeout=30)
        assert capped.result(timeout=5).recommendations
        assert working.code() is grpc.StatusCode.OK
    assert all(seen.remaining is not None and seen.remaining < 0.55 for seen in backend.calls)


def test_a_future_tells_the_time_left_of_its_deadline(serve_blocking_grpc: ServeBlocking) -> None:
    clock = FakeClock()
    target = serve_blocking_grpc(BlockingBackend([Step(delay=1.0)]))
    with Channel(target, ChannelOptions(clock=clock)) as channel:
        running = RecommendationsStub(channel).Recommend.future(REQUEST, timeout=5)
        assert running.time_remaining() == 5.0  # fixed when the call was made
        clock.advance(2)
        assert running.time_remaining() == 3.0
        assert running.cancel()
        assert running.time_remaining() == 0.0  # done


def test_a_server_stream_and_its_failure_midway(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend([Step(), Step(code=UNAVAILABLE, details="gone", messages=1)])
    target = serve_blocking_grpc(backend)
    with Channel(target, ChannelOptions(strategy=FAST_RETRY)) as channel:
        stub = RecommendationsStub(channel)
        with microcall.priority("low"):
            assert [book.id for book in stub.RecommendStream(REQUEST)] == [0, 1, 2]
        received: list[int] = []
        with pytest.raises(GrpcStatusError):
            received.extend(book.id for book in stub.RecommendStream(REQUEST))
    assert received == [0]
    assert len(backend.calls) == 2  # the failed stream was not retried
    assert backend.calls[0].metadata["x-request-priority"] == "low"


def test_one_channel_shared_by_threads(serve_blocking_grpc: ServeBlocking) -> None:
    backend = BlockingBackend()
    target = serve_blocking_grpc(backend)
    errors: list[BaseException] = []
    with Channel(target) as channel:
        stub = RecommendationsStub(channel)

        def work() -> None:
            try:
                for _ in range(20):
                    stub.Recommend(REQUEST)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        budget = channel.budget
    assert errors == []
    assert len(backend.calls) == 160
    assert budget is not None
    assert budget.deposited == 160  # the threads took turns: no count was lost


def test_many_futures_in_flight(serve_blocking_grpc: ServeBlocking) -> None:
    target = serve_blocking_grpc(BlockingBackend())
    with Channel(target) as channel:
        stub = RecommendationsStub(channel)
        calls = [stub.Recommend.future(REQUEST) for _ in range(20)]
        titles = {call.result(timeout=10).recommendations[0].title for call in calls}
    assert len(titles) == 20


class FirstAttemptEnds:
    """An observer that sets ``ended`` when a call's first attempt has ended."""

    def __init__(self, ended: threading.Event) -> None:
        self.ended = ended

    def call_started(self, method: Any) -> FirstAttemptEnds:
        return self

    def attempt_started(self, *args: Any) -> FirstAttemptEnds:
        return self

    def attempt_ended(self, attempt: Any) -> None:
        self.ended.set()

    def call_ended(self, *args: Any) -> None:
        pass


def test_closing_the_channel_ends_a_call_in_its_backoff_at_once_and_refuses_new_calls(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    """It waited out the backoff, then raised grpc's "Cannot invoke RPC: Channel closed!"."""
    target = serve_blocking_grpc(BlockingBackend([Step(code=UNAVAILABLE)] * 3))
    slow_retry = microcall.retry(3, backoff=microcall.Backoff(base=5.0, cap=5.0, jitter=False))
    failed_once = threading.Event()
    channel = Channel(
        target,
        ChannelOptions(strategy=slow_retry, budget=None),
        observers=[FirstAttemptEnds(failed_once)],
    )
    stub = RecommendationsStub(channel)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            stub.Recommend(REQUEST, timeout=30)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    assert failed_once.wait(10)  # the first attempt failed: the call waits out its 5 s backoff
    began = time.monotonic()
    channel.close()
    caller.join(10)
    assert time.monotonic() - began < 2.0
    (closed,) = outcome
    assert isinstance(closed, GrpcStatusError)
    assert (closed.code(), closed.details()) == (
        grpc.StatusCode.CANCELLED,
        "the channel was closed",
    )
    for later in (lambda: stub.Recommend(REQUEST), lambda: stub.Recommend.future(REQUEST)):
        with pytest.raises(microcall.UsageError, match="this channel is closed"):
            later()
