"""The call driver and its shared decisions, driven by hand with a fake clock: no event loop."""

from __future__ import annotations

import random

import pytest

from microcall._attempt import Attempt, AttemptKind, RefusalReason
from microcall._call import CallPolicies
from microcall._driver import CallDriver, Start, allowed_attempts, start_call
from microcall._group import EndpointGroup
from microcall.policy.backoff import Backoff
from microcall.policy.balancer import BalancerConfig, Endpoint
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.classify import Verdict
from microcall.policy.hedge_delay import LearnedDelayConfig
from microcall.policy.strategy import (
    Finish,
    Hedged,
    Send,
    Strategy,
    Wait,
    hedged,
    retry,
    single,
)
from microcall.testing import FakeClock


def _policies(budget: RetryBudget | None = None) -> CallPolicies:
    return CallPolicies(budget=budget, floor=0.005, rng=random.Random(7))


def test_a_call_that_may_not_be_replayed_gets_one_attempt_whatever_the_strategy() -> None:
    clock = FakeClock()
    now = clock.now()
    plan, learner = _policies().plan(
        retry(3), replayable=False, route="/a", start=now, expires_at=now + 1.0
    )
    assert learner is None
    assert plan.decide(now) == Send(AttemptKind.FIRST)
    plan.finished(0, Verdict.RETRY, now, None)
    assert plan.decide(now) == Finish(0)


def test_a_retry_is_refused_when_the_budget_is_empty_and_the_plan_finishes() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0))
    policies = _policies(budget)
    now = clock.now()
    budget.deposit(now)
    plan, learner = policies.plan(
        retry(3), replayable=True, route="/a", start=now, expires_at=now + 1.0
    )
    action = plan.decide(now)
    assert action == Send(AttemptKind.FIRST)
    assert policies.admit(AttemptKind.FIRST, learner, now) is None
    plan.finished(0, Verdict.RETRY, now, None)
    action = plan.decide(now)
    assert isinstance(action, Wait)
    assert action.until is not None
    clock.advance(action.until - now)
    now = clock.now()
    action = plan.decide(now)
    assert isinstance(action, Send)
    assert action.kind is AttemptKind.RETRY
    refusal = policies.admit(action.kind, learner, now)
    assert refusal is RefusalReason.RETRY_BUDGET
    assert refusal == "retry budget empty"  # what records have always shown
    plan.refused()
    assert plan.decide(now) == Finish(0)


def test_a_learned_hedge_waits_the_learned_delay_then_draws_on_its_own_budget() -> None:
    clock = FakeClock()
    policies = _policies()
    strategy = hedged(max_extra_load=0.5, attempts=2)
    now = clock.now()
    plan, learner = policies.plan(
        strategy, replayable=True, route="/books", start=now, expires_at=now + 5.0
    )
    assert learner is not None
    assert (
        policies.plan(strategy, replayable=True, route="/books", start=now, expires_at=now + 5.0)[1]
        is learner
    )  # one learner per config, shared by every call
    assert plan.decide(now) == Send(AttemptKind.FIRST)
    action = plan.decide(now)
    assert isinstance(action, Wait)
    assert action.until is not None
    assert action.until > now
    clock.advance(action.until - now)
    action = plan.decide(clock.now())
    assert action == Send(AttemptKind.HEDGE)
    # The hedge budget allows max_extra_load of the calls: two calls deposited.
    assert policies.admit(AttemptKind.HEDGE, learner, clock.now()) is None
    assert policies.admit(AttemptKind.HEDGE, learner, clock.now()) is RefusalReason.HEDGE_BUDGET


# ---------------------------------------------------------------- the driver
#
# A protocol of its own, so the driver is seen with nothing of HTTP's or
# gRPC's: an outcome is a word. "ok" is an answer, "busy" a failure worth
# retrying, "no" a failure no attempt will fix, "slow" the attempt running out
# of time (retriable only when the strategy's own limit, not the deadline,
# ended it).


class WordRules:
    record_type = Attempt

    def judge(self, outcome: str, attempt_limited: bool) -> tuple[Verdict, float | None]:
        if outcome == "ok":
            return Verdict.ACCEPT, None
        if outcome == "slow":
            return (Verdict.RETRY if attempt_limited else Verdict.STOP), None
        if outcome.startswith("busy"):
            # "busy 0.3": come back in 300 ms at the earliest.
            _, _, after = outcome.partition(" ")
            return Verdict.RETRY, float(after) if after else None
        return Verdict.STOP, None

    def timed_out(self, outcome: str) -> bool:
        return outcome == "slow"

    def target(self, endpoint: Endpoint) -> str:
        return f"{endpoint.address}:80"

    def record(
        self,
        index: int,
        kind: AttemptKind,
        target: str,
        offset: float,
        duration: float,
        outcome: str,
    ) -> Attempt:
        return Attempt(index, kind, target, offset, duration, error=outcome)


RULES = WordRules()


def _group(*addresses: str, breaker: CircuitBreakerConfig | None = None) -> EndpointGroup:
    return EndpointGroup(
        addresses,
        balancer=BalancerConfig(),
        breaker=breaker,
        ejection=None,
        rng=random.Random(7),
    )


def _call(
    clock: FakeClock,
    strategy: Strategy,
    *,
    policies: CallPolicies | None = None,
    group: EndpointGroup | None = None,
    timeout: float = 1.0,
    replayable: bool = True,
) -> CallDriver[str]:
    now = clock.now()
    return start_call(
        policies or _policies(),
        RULES,
        strategy,
        replayable=replayable,
        route="/books",
        start=now,
        expires_at=now + timeout,
        group=group,
        target="self:80",
    )


def _started(driver: CallDriver[str], now: float) -> Start:
    action = driver.next(now)
    assert isinstance(action, Start), action
    return action


def _waits(driver: CallDriver[str], now: float) -> float:
    action = driver.next(now)
    assert isinstance(action, Wait), action
    assert action.until is not None
    return action.until


def _finishes(driver: CallDriver[str], now: float) -> Finish:
    action = driver.next(now)
    assert isinstance(action, Finish), action
    return action


def test_a_retry_waits_its_backoff_goes_to_another_endpoint_and_its_answer_wins() -> None:
    clock = FakeClock()
    group = _group("a", "b")
    driver = _call(clock, retry(3), group=group)
    first = _started(driver, clock.now())
    assert first.kind is AttemptKind.FIRST
    assert first.endpoint is not None
    assert first.target == f"{first.endpoint.address}:80"
    assert first.timeout == pytest.approx(1.0)  # what is left of the deadline
    assert first.by_deadline
    assert first.endpoint.stats.outstanding == 1
    clock.advance(0.01)
    record = driver.finished(first.index, "busy", clock.now())
    assert record.error == "busy"
    assert record.duration == pytest.approx(0.01)
    assert first.endpoint.stats.outstanding == 0
    until = _waits(driver, clock.now())  # the jittered backoff
    assert until > clock.now()
    clock.advance(until - clock.now())
    second = _started(driver, clock.now())
    assert second.kind is AttemptKind.RETRY
    assert second.endpoint is not first.endpoint  # the one that failed is avoided
    assert second.timeout == pytest.approx(1.0 - (clock.now() - driver.start))
    driver.finished(second.index, "ok", clock.now())
    _finishes(driver, clock.now())
    won = driver.winner()
    assert won is not None
    assert won[0] == "ok"
    assert won[1] is second
    assert [a.error for a in driver.attempts] == ["busy", "ok"]
    assert [a.kind for a in driver.attempts] == [AttemptKind.FIRST, AttemptKind.RETRY]
    assert driver.dropped() == ["busy"]  # the answer the call does not return


def test_a_retry_after_hint_longer_than_the_backoff_is_waited() -> None:
    clock = FakeClock()
    driver = _call(clock, retry(3), timeout=5.0)
    first = _started(driver, clock.now())
    driver.finished(first.index, "busy 0.7", clock.now())
    assert _waits(driver, clock.now()) >= clock.now() + 0.7


def test_an_empty_budget_refuses_the_retry_the_record_says_so_and_the_failure_is_the_result() -> (
    None
):
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0))
    policies = _policies(budget)
    budget.deposit(clock.now())
    driver = _call(clock, retry(3, backoff=Backoff(base=0.0)), policies=policies)
    first = _started(driver, clock.now())
    assert first.endpoint is None  # no group: the call's own target
    assert first.target == "self:80"
    driver.finished(first.index, "busy", clock.now())
    _finishes(driver, clock.now())
    refused = driver.attempts[-1]
    assert (refused.sent, refused.kind, refused.error) == (
        False,
        AttemptKind.RETRY,
        RefusalReason.RETRY_BUDGET,
    )
    won = driver.winner()
    assert won is not None
    assert won[0] == "busy"
    # A budget, not the deadline, stopped it: a timeout would stay the attempt's.
    assert not driver.deadline_ended(clock.now())


def test_a_hedge_waits_the_learned_delay_and_its_win_leaves_the_first_attempt_lost() -> None:
    clock = FakeClock()
    policies = _policies()
    learned = LearnedDelayConfig(max_extra_load=0.5, min_samples=5, refresh_every=1)
    strategy = Hedged(attempts=2, learned=learned)
    group = _group("a", "b")
    # Five calls answered in 200 ms each teach the route its delay.
    for _ in range(5):
        driver = _call(clock, strategy, policies=policies, group=group)
        attempt = _started(driver, clock.now())
        clock.advance(0.2)
        driver.finished(attempt.index, "ok", clock.now())
        _finishes(driver, clock.now())
    clock.advance(1.0)  # past the learned delay's refresh gap

    driver = _call(clock, strategy, policies=policies, group=group)
    first = _started(driver, clock.now())
    until = _waits(driver, clock.now())
    assert until - clock.now() == pytest.approx(0.2, rel=0.05)
    clock.advance(until - clock.now())
    hedge = _started(driver, clock.now())
    assert hedge.kind is AttemptKind.HEDGE
    assert hedge.endpoint is not first.endpoint  # backs up the first elsewhere
    clock.advance(0.01)
    driver.finished(hedge.index, "ok", clock.now())
    _finishes(driver, clock.now())
    # The runner stops the first attempt: recorded as cancelled at once...
    record = driver.lost(first.index, clock.now())
    assert record.cancelled
    assert record.duration == pytest.approx(clock.now() - first.started)
    assert [(a.kind, a.cancelled) for a in driver.attempts] == [
        (AttemptKind.FIRST, True),
        (AttemptKind.HEDGE, False),
    ]
    won = driver.winner()
    assert won is not None
    assert won[1] is hedge
    # ... and its endpoint hears of it once it is really over.
    assert first.endpoint is not None
    assert first.endpoint.stats.outstanding == 1
    clock.advance(0.05)
    driver.settled(first.index, None, clock.now())
    assert first.endpoint.stats.outstanding == 0


def test_a_loser_that_answers_while_it_lingers_is_heard_as_an_answer() -> None:
    clock = FakeClock()
    breaker = CircuitBreakerConfig(minimum_throughput=1, failure_threshold=0.5)
    group = _group("a", "b", breaker=breaker)
    driver = _call(clock, hedged(0.05), group=group)
    first = _started(driver, clock.now())
    clock.advance(0.05)
    hedge = _started(driver, clock.now())
    driver.finished(hedge.index, "ok", clock.now())
    _finishes(driver, clock.now())
    driver.lost(first.index, clock.now())
    clock.advance(0.02)
    driver.settled(first.index, "no", clock.now())  # it failed after all
    assert first.endpoint is not None
    assert first.endpoint.stats.outstanding == 0
    assert first.endpoint.breaker is not None
    assert not first.endpoint.breaker.available(clock.now())  # its failure counted
    assert driver.attempts[0].cancelled  # the call's record keeps it as cancelled


def test_an_open_breaker_sends_the_attempt_to_another_endpoint() -> None:
    clock = FakeClock()
    breaker = CircuitBreakerConfig(minimum_throughput=2, failure_threshold=0.5)
    group = _group("a", "b", breaker=breaker)
    broken = group.endpoints[0]
    for _ in range(2):
        group.started(broken, clock.now())
        group.finished(broken, 0.01, False, clock.now())
    for _ in range(5):
        driver = _call(clock, single(), group=group)
        attempt = _started(driver, clock.now())
        assert attempt.endpoint is group.endpoints[1]
        driver.finished(attempt.index, "ok", clock.now())


def test_an_open_breaker_on_the_only_endpoint_refuses_the_call_unsent() -> None:
    clock = FakeClock()
    breaker = CircuitBreakerConfig(minimum_throughput=2, failure_threshold=0.5)
    group = _group("a", breaker=breaker)
    for _ in range(2):
        group.started(group.endpoints[0], clock.now())
        group.finished(group.endpoints[0], 0.01, False, clock.now())
    driver = _call(clock, retry(3), group=group)
    _finishes(driver, clock.now())
    assert driver.winner() is None
    assert driver.circuit_open == "a:80"  # the runner's error names it
    [refused] = driver.attempts
    assert (refused.sent, refused.error) == (False, RefusalReason.CIRCUIT_OPEN)
    assert refused.error == "CircuitOpen"


def test_no_attempt_starts_below_the_floor() -> None:
    clock = FakeClock()
    driver = _call(clock, retry(3), timeout=0.004)  # the floor is 5 ms
    _finishes(driver, clock.now())
    assert driver.winner() is None
    assert driver.circuit_open is None  # the runner's error: too late
    assert driver.attempts == ()


def test_an_attempt_limit_within_the_floor_of_the_deadline_gives_way_to_the_deadline() -> None:
    clock = FakeClock()
    strategy = retry(3, attempt_timeout=0.1, backoff=Backoff(base=0.0))
    limited = _started(_call(clock, strategy, timeout=0.5), clock.now())
    assert (limited.timeout, limited.by_deadline) == (0.1, False)
    # 103 ms left: ended by its own 100 ms, no attempt could follow it.
    last = _started(_call(clock, strategy, timeout=0.103), clock.now())
    assert last.by_deadline
    assert last.timeout == pytest.approx(0.103)


def test_a_timeout_on_the_attempts_own_limit_is_retried_and_the_deadline_decides_the_error() -> (
    None
):
    clock = FakeClock()
    far_backoff = Backoff(base=1.0, jitter=False)
    driver = _call(clock, retry(3, attempt_timeout=0.1, backoff=far_backoff), timeout=0.5)
    first = _started(driver, clock.now())
    clock.advance(0.1)
    driver.finished(first.index, "slow", clock.now())
    # The backoff would end past the deadline: the call finishes with the
    # timeout, and the deadline, not the strategy, is what ended it.
    _finishes(driver, clock.now())
    assert driver.deadline_ended(clock.now())

    spent = _call(clock, retry(2, attempt_timeout=0.1, backoff=Backoff(base=0.0)), timeout=5.0)
    while isinstance(action := spent.next(clock.now()), Start):
        clock.advance(0.1)
        spent.finished(action.index, "slow", clock.now())
    assert isinstance(action, Finish)
    assert [a.error for a in spent.attempts] == ["slow", "slow"]
    assert not spent.deadline_ended(clock.now())  # all attempts spent, time left


def test_a_call_that_may_not_be_replayed_gets_one_attempt_from_the_driver() -> None:
    clock = FakeClock()
    driver = _call(clock, retry(3), replayable=False)
    first = _started(driver, clock.now())
    driver.finished(first.index, "busy", clock.now())
    _finishes(driver, clock.now())
    won = driver.winner()
    assert won is not None
    assert won[0] == "busy"
    assert len(driver.attempts) == 1
    assert not driver.deadline_ended(clock.now())  # one attempt was all it could have


def test_the_driver_counts_the_attempts_a_strategy_allows() -> None:
    assert allowed_attempts(retry(4), replayable=True) == 4
    assert allowed_attempts(retry(4), replayable=False) == 1
    assert allowed_attempts(hedged(0.01, attempts=3), replayable=True) == 3
    assert allowed_attempts(single(), replayable=True) == 1


# ---------------------------------------------------------------- gRPC's adapter


def test_grpc_calls_follow_the_same_rule_for_which_timeout_error_ends_them() -> None:
    grpc = pytest.importorskip("grpc")
    from microcall.errors import AttemptTimeout, DeadlineExceeded
    from microcall.grpc import ChannelOptions, RpcMethod
    from microcall.grpc._core import ChannelCore
    from microcall.grpc._targets import Targets
    from microcall.grpc._unary import Failed, Start, UnaryCall

    clock = FakeClock()
    options = ChannelOptions(clock=clock)
    targets = Targets(
        ["a:1"],
        lambda target: target,
        balancer=options.balancer,
        breaker=None,
        ejection=None,
    )
    core: ChannelCore[str] = ChannelCore(options, targets, (), rng=random.Random(7))
    method = RpcMethod.parse("/shop.Books/Get", "unary_unary", idempotent=True)
    expired = Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "", (), RuntimeError("cause"))

    def error_of(strategy: Strategy, timeout: float) -> BaseException:
        """How a call whose every attempt runs out of its 100 ms ends."""
        now = clock.now()
        call: UnaryCall[str] = UnaryCall.planned(
            core, method, strategy, start=now, expires_at=now + timeout, metadata=(), watch=None
        )
        while isinstance(action := call.next(clock.now()), Start):
            clock.advance(0.1)
            call.finished(action.index, expired, clock.now())
        assert isinstance(action, Finish)
        try:
            call.result(action, clock.now())
        except (AttemptTimeout, DeadlineExceeded) as error:
            return error
        raise AssertionError("the call did not fail")

    # The backoff would end past the deadline: the deadline ended the call.
    far = Backoff(base=1.0, jitter=False)
    ended = error_of(retry(3, attempt_timeout=0.1, backoff=far), timeout=0.5)
    assert isinstance(ended, DeadlineExceeded)
    assert isinstance(ended, grpc.RpcError)
    # Every attempt spent with time left: the strategy ended it.
    spent = error_of(retry(2, attempt_timeout=0.1, backoff=Backoff(base=0.0)), timeout=5.0)
    assert isinstance(spent, AttemptTimeout)
