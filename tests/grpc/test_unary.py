"""The unary-call driver on a fake clock: plans, budgets, targets, breakers, statuses. No network."""

from __future__ import annotations

import math
import random
from typing import Any

import grpc
import pytest

import microcall
from microcall.errors import AttemptTimeout, CircuitOpen, DeadlineExceeded, GrpcStatusError
from microcall.grpc import PUSHBACK_METADATA, ChannelOptions, RpcMethod
from microcall.grpc._core import ChannelCore, wire_timeout
from microcall.grpc._targets import Targets
from microcall.grpc._unary import Answered, Failed, Start, UnaryCall
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudgetConfig
from microcall.policy.strategy import Finish, Strategy, Wait
from microcall.testing import FakeClock

METHOD = RpcMethod.parse("/bookstore.Recommendations/Recommend", "unary_unary", idempotent=True)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def make_core(
    clock: FakeClock, targets: list[str], observers: tuple[Any, ...] = (), **settings: Any
) -> ChannelCore[str]:
    options = ChannelOptions(clock=clock, **settings)
    group = Targets(
        targets,
        lambda target: target,
        balancer=options.balancer,
        breaker=options.breaker,
        ejection=options.ejection,
        rng=random.Random(7),
    )
    return ChannelCore(options, group, observers, rng=random.Random(7))


def start_call(
    core: ChannelCore[str], strategy: Strategy, *, timeout: float = 1.0, method: RpcMethod = METHOD
) -> UnaryCall[str]:
    now = core.now()
    expires_at = core.expires_at(timeout, now)
    plan, learner = core.plan(method, strategy, now, expires_at)
    return UnaryCall(
        core,
        method,
        plan,
        learner,
        start=now,
        expires_at=expires_at,
        metadata=core.metadata("normal", None),
        watch=None,
    )


def failed(code: grpc.StatusCode, *trailing: tuple[str, str]) -> Failed:
    return Failed(code, "scripted", tuple(trailing), RuntimeError("cause"))


def test_a_retry_goes_to_another_target_and_its_answer_wins() -> None:
    clock = FakeClock()
    core = make_core(clock, ["a:1", "b:2"])
    call = start_call(core, microcall.retry(3))
    first = call.next(clock.now())
    assert isinstance(first, Start)
    call.finished(first.index, failed(UNAVAILABLE), clock.now())
    waiting = call.next(clock.now())
    assert isinstance(waiting, Wait)  # jittered backoff
    clock.advance(waiting.until - clock.now())  # type: ignore[operator]
    second = call.next(clock.now())
    assert isinstance(second, Start)
    assert second.slot != first.slot
    call.finished(second.index, Answered("reply", None), clock.now())
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    assert call.result(done, clock.now()) == "reply"
    assert [a.code for a in call.attempts] == ["UNAVAILABLE", "OK"]


def test_an_answer_status_ends_the_call_without_a_retry() -> None:
    clock = FakeClock()
    call = start_call(make_core(clock, ["a:1"]), microcall.retry(3))
    first = call.next(clock.now())
    assert isinstance(first, Start)
    call.finished(first.index, failed(grpc.StatusCode.NOT_FOUND), clock.now())
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    with pytest.raises(GrpcStatusError) as raised:
        call.result(done, clock.now())
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "scripted"
    assert len(raised.value.attempts) == 1


def test_pushback_delays_the_retry() -> None:
    clock = FakeClock()
    call = start_call(make_core(clock, ["a:1"]), microcall.retry(3), timeout=5.0)
    first = call.next(clock.now())
    assert isinstance(first, Start)
    call.finished(first.index, failed(UNAVAILABLE, (PUSHBACK_METADATA, "700")), clock.now())
    waiting = call.next(clock.now())
    assert isinstance(waiting, Wait)
    assert waiting.until is not None
    assert waiting.until >= clock.now() + 0.7


def test_a_negative_pushback_stops_retrying() -> None:
    clock = FakeClock()
    call = start_call(make_core(clock, ["a:1"]), microcall.retry(3))
    first = call.next(clock.now())
    assert isinstance(first, Start)
    call.finished(first.index, failed(UNAVAILABLE, (PUSHBACK_METADATA, "-1")), clock.now())
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    with pytest.raises(GrpcStatusError):
        call.result(done, clock.now())
    assert len(call.attempts) == 1


def test_an_empty_budget_refuses_the_retry_and_the_record_shows_it() -> None:
    clock = FakeClock()
    budget = RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0.0)
    core = make_core(clock, ["a:1"], budget=budget)
    call = start_call(core, microcall.retry(3, backoff=microcall.Backoff(base=0.0)))
    first = call.next(clock.now())
    assert isinstance(first, Start)
    call.finished(first.index, failed(UNAVAILABLE), clock.now())
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    with pytest.raises(GrpcStatusError):
        call.result(done, clock.now())
    refused = call.attempts[-1]
    assert not refused.sent
    assert refused.error == "retry budget empty"


def test_a_hedge_goes_to_another_target_and_the_loser_is_abandoned() -> None:
    clock = FakeClock()
    core = make_core(clock, ["a:1", "b:2"])
    call = start_call(core, microcall.hedged(0.05))
    first = call.next(clock.now())
    assert isinstance(first, Start)
    waiting = call.next(clock.now())
    assert isinstance(waiting, Wait)
    assert waiting.until == pytest.approx(clock.now() + 0.05)
    clock.advance(0.05)
    hedge = call.next(clock.now())
    assert isinstance(hedge, Start)
    assert hedge.kind is microcall.AttemptKind.HEDGE
    assert hedge.slot != first.slot
    clock.advance(0.01)
    call.finished(hedge.index, Answered("fast", None), clock.now())
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    call.abandon(first.index, clock.now())
    assert call.result(done, clock.now()) == "fast"
    assert [a.cancelled for a in call.attempts] == [True, False]


def test_the_deadline_ends_the_call_and_an_attempt_limit_only_the_attempt() -> None:
    clock = FakeClock()
    call = start_call(make_core(clock, ["a:1"]), microcall.retry(3))
    first = call.next(clock.now())
    assert isinstance(first, Start)
    # What is left of the deadline, as grpc will send it (short of its round-up).
    assert first.timeout == pytest.approx(wire_timeout(1.0))
    clock.advance(1.0)
    call.finished(first.index, failed(grpc.StatusCode.DEADLINE_EXCEEDED), clock.now())
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    with pytest.raises(DeadlineExceeded):
        call.result(done, clock.now())

    limited = start_call(
        make_core(clock, ["a:1"]),
        microcall.retry(2, attempt_timeout=0.1, backoff=microcall.Backoff(base=0.0)),
    )
    attempts = []
    while not isinstance(action := limited.next(clock.now()), Finish):
        assert isinstance(action, Start)
        assert action.timeout == pytest.approx(wire_timeout(0.1))
        attempts.append(action)
        clock.advance(0.1)
        limited.finished(action.index, failed(grpc.StatusCode.DEADLINE_EXCEEDED), clock.now())
    assert len(attempts) == 2  # the first attempt's expiry was retried
    with pytest.raises(AttemptTimeout):
        limited.result(action, clock.now())


def test_no_attempt_starts_below_the_floor() -> None:
    clock = FakeClock()
    call = start_call(make_core(clock, ["a:1"]), microcall.single(), timeout=0.001)
    done = call.next(clock.now())
    assert isinstance(done, Finish)
    with pytest.raises(DeadlineExceeded):
        call.result(done, clock.now())
    assert call.attempts == ()


def test_an_open_breaker_fails_fast_without_sending() -> None:
    clock = FakeClock()
    breaker = CircuitBreakerConfig(minimum_throughput=2, failure_threshold=0.5)
    core = make_core(clock, ["a:1"], breaker=breaker)
    for _ in range(2):
        call = start_call(core, microcall.single())
        attempt = call.next(clock.now())
        assert isinstance(attempt, Start)
        call.finished(attempt.index, failed(UNAVAILABLE), clock.now())
    refused = start_call(core, microcall.single())
    done = refused.next(clock.now())
    assert isinstance(done, Finish)
    with pytest.raises(CircuitOpen):
        refused.result(done, clock.now())
    assert [a.sent for a in refused.attempts] == [False]


def test_a_method_that_is_not_idempotent_gets_one_attempt() -> None:
    clock = FakeClock()
    unsafe = RpcMethod.parse("/shop.Cart/Add", "unary_unary", idempotent=False)
    call = start_call(make_core(clock, ["a:1"]), microcall.retry(3), method=unsafe)
    first = call.next(clock.now())
    assert isinstance(first, Start)
    call.finished(first.index, failed(UNAVAILABLE), clock.now())
    assert isinstance(call.next(clock.now()), Finish)


class AddsTrace:
    """An observer that adds a traceparent to every attempt, as a tracer would."""

    def __init__(self) -> None:
        self.ended: list[tuple[object, object, int]] = []

    def call_started(self, method: RpcMethod) -> AddsTrace:
        return self

    def attempt_started(self, index: int, kind: Any, target: str, metadata: list[Any]) -> None:
        metadata.append(("traceparent", f"00-{index:032x}-{index:016x}-01"))

    def call_ended(self, response: object, error: object, attempts: Any) -> None:
        self.ended.append((response, error, len(attempts)))


def test_observers_can_add_metadata_and_see_the_end() -> None:
    clock = FakeClock()
    observer = AddsTrace()
    core = make_core(clock, ["a:1"], observers=(observer,))
    now = clock.now()
    plan, learner = core.plan(METHOD, microcall.single(), now, now + 1)
    from microcall.grpc._observe import RpcWatch

    call: UnaryCall[str] = UnaryCall(
        core,
        METHOD,
        plan,
        learner,
        start=now,
        expires_at=now + 1,
        metadata=core.metadata("low", [("x-user", "7")]),
        watch=RpcWatch(core.observers, METHOD),
    )
    first = call.next(now)
    assert isinstance(first, Start)
    assert dict(first.metadata) == {
        "x-user": "7",
        "x-request-priority": "low",
        "traceparent": f"00-{0:032x}-{0:016x}-01",
    }
    call.finished(first.index, Answered("reply", None), now)
    done = call.next(now)
    assert isinstance(done, Finish)
    call.result(done, now)
    assert observer.ended == [("reply", None, 1)]


@pytest.mark.parametrize("left", [0.003, 0.5, 0.9999, 1.0, 1.0001, 1.5, 9.999, 10.0, 42.42, 300.0])
def test_a_wire_timeout_never_gives_the_callee_more_than_the_caller_has(left: float) -> None:
    """grpc rounds the time left up to its unit on the wire, from a clock a little stale.

    Taken to the step below, less that staleness, the round-up can only meet it.
    """
    sent = wire_timeout(left)
    assert 0 < sent < left
    # grpc's rounding, applied to the timeout plus a millisecond of stale clock.
    stale = sent + 0.001
    for below, step in ((1.0, 0.001), (10.0, 0.01), (100.0, 0.1), (math.inf, 1.0)):
        if stale < below:
            assert math.ceil(round(stale / step, 9)) * step <= left
            break
    assert left - sent < max(left / 50, 0.02) or left >= 100  # never much shorter
