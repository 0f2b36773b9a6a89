"""Blocking callables: retries on a fake clock, the error when attempts run out, deadlines, budgets."""

from __future__ import annotations

import pytest

import microcall
from microcall import (
    AttemptKind,
    AttemptsExhausted,
    Backoff,
    Deadline,
    DeadlineExceeded,
    Resilience,
    RetryBudget,
    RetryBudgetConfig,
    Verdict,
)
from microcall.testing import FakeClock
from tests.resilience.conftest import Flaky

STEADY = Backoff(base=0.1, multiplier=2.0, cap=1.0, jitter=False)


class Sleeps:
    """A backoff sleep that moves a FakeClock and remembers each wait."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def retrying(clock: FakeClock, attempts: int = 3, **settings: object) -> tuple[Resilience, Sleeps]:
    sleeps = Sleeps(clock)
    settings.setdefault("on", ConnectionError)
    resilience = Resilience(
        strategy=microcall.retry(attempts, backoff=STEADY),
        clock=clock,
        sleep=sleeps,
        name="orders-db",
        **settings,  # type: ignore[arg-type]
    )
    return resilience, sleeps


def test_retries_until_success_with_the_backoff_on_the_fake_clock() -> None:
    clock = FakeClock()
    resilience, sleeps = retrying(clock)
    flaky = Flaky(ConnectionError("reset"), ConnectionError("reset"), value=42)
    assert resilience.call(flaky, "SELECT 42") == 42
    assert flaky.calls == 3
    assert sleeps.waits == [pytest.approx(0.1), pytest.approx(0.2)]  # base, then doubled


def test_the_decorator_retries_the_same_way() -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    flaky = Flaky(ConnectionError("reset"), value="row")

    @microcall.resilient(
        strategy=microcall.retry(2, backoff=STEADY), on=ConnectionError, clock=clock, sleep=sleeps
    )
    def fetch(query: str) -> str:
        return str(flaky(query))

    assert fetch("SELECT 1") == "row"
    assert sleeps.waits == [pytest.approx(0.1)]


def test_when_attempts_run_out_one_error_lists_them_with_the_last_exception_as_cause() -> None:
    clock = FakeClock()
    resilience, _ = retrying(clock)
    last = ConnectionError("password=hunter2 refused")  # a message that must not leak
    flaky = Flaky(ConnectionError("a"), TimeoutError("b"), last)
    resilience = Resilience(
        strategy=microcall.retry(3, backoff=STEADY),
        on=(ConnectionError, TimeoutError),
        clock=clock,
        sleep=clock.advance,
        name="orders-db",
    )
    with pytest.raises(AttemptsExhausted) as raised:
        resilience.call(flaky)
    error = raised.value
    assert isinstance(error, microcall.CallError)
    assert error.__cause__ is last
    assert [a.kind for a in error.attempts] == [
        AttemptKind.FIRST,
        AttemptKind.RETRY,
        AttemptKind.RETRY,
    ]
    assert [a.error for a in error.attempts] == [
        "ConnectionError",
        "TimeoutError",
        "ConnectionError",
    ]
    assert all(a.endpoint == "orders-db" and a.sent for a in error.attempts)
    assert error.attempts[1].started == pytest.approx(0.1)  # after the first backoff
    text = str(error)
    assert "orders-db failed on 3 attempts: the last raised ConnectionError" in text
    assert "#2 retry orders-db ConnectionError" in text
    assert "hunter2" not in text


def test_an_exception_that_is_not_retriable_propagates_as_itself_at_once() -> None:
    clock = FakeClock()
    resilience, sleeps = retrying(clock)
    wrong = ValueError("bad query")
    flaky = Flaky(ConnectionError("reset"), wrong)
    with pytest.raises(ValueError, match="bad query") as raised:
        resilience.call(flaky)
    assert raised.value is wrong
    assert flaky.calls == 2
    assert sleeps.waits == [pytest.approx(0.1)]


def test_a_predicate_decides_what_is_retriable() -> None:
    clock = FakeClock()
    resilience, _ = retrying(clock, on=lambda error: "deadlock" in str(error))
    assert resilience.call(Flaky(RuntimeError("deadlock detected"), value=1)) == 1
    with pytest.raises(RuntimeError, match="syntax"):
        resilience.call(Flaky(RuntimeError("syntax error"), value=1))


def test_a_classifier_sees_results_and_the_last_one_is_returned_when_attempts_run_out() -> None:
    clock = FakeClock()

    def classify(result: object, error: Exception | None) -> Verdict:
        if error is not None:
            return Verdict.STOP
        return Verdict.RETRY if result == "busy" else Verdict.ACCEPT

    answers = iter(["busy", "busy", "ok"])
    resilience, _ = retrying(clock, on=None, classifier=classify)
    assert resilience.call(lambda: next(answers)) == "ok"
    # Like a 503 after the last retry: a retriable answer is still an answer.
    assert resilience.call(lambda: "busy") == "busy"


def test_the_deadline_stops_retries_and_says_so_with_the_last_exception_as_cause() -> None:
    clock = FakeClock()
    resilience, _ = retrying(clock, attempts=5, timeout=1.0)

    def slow_failure() -> None:
        clock.advance(0.6)
        raise ConnectionError("reset")

    with pytest.raises(DeadlineExceeded) as raised:
        resilience.call(slow_failure)
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert len(raised.value.attempts) == 2  # 0.6 + 0.1 + 0.6 > 1.0: no time for a third
    assert "too little for another attempt" in str(raised.value)


def test_an_expired_inherited_deadline_refuses_the_call_without_running_it() -> None:
    clock = FakeClock()
    resilience, _ = retrying(clock)
    flaky = Flaky(value=1)
    token = microcall.set_deadline(Deadline(clock.now() - 0.001, clock=clock))
    try:
        with pytest.raises(DeadlineExceeded, match="orders-db not called") as raised:
            resilience.call(flaky)
    finally:
        microcall.reset_deadline(token)
    assert flaky.calls == 0
    assert raised.value.attempts == ()


def test_a_microcall_deadline_block_refuses_once_it_is_spent() -> None:
    flaky = Flaky(value=1)
    with microcall.deadline(0), pytest.raises(DeadlineExceeded):
        Resilience().call(flaky)
    assert flaky.calls == 0


def test_the_callable_inherits_the_remaining_deadline_and_sets_it_for_what_it_calls() -> None:
    clock = FakeClock()
    resilience, _ = retrying(clock, timeout=5.0)
    seen: list[float] = []

    def query() -> None:
        deadline = microcall.current_deadline()
        assert deadline is not None
        seen.append(deadline.remaining())

    resilience.call(query)  # its own timeout
    token = microcall.set_deadline(Deadline(clock.now() + 0.8, clock=clock))
    try:
        resilience.call(query)  # the caller's deadline is shorter: it wins
    finally:
        microcall.reset_deadline(token)
    assert seen == [pytest.approx(5.0), pytest.approx(0.8)]
    assert microcall.current_deadline() is None  # restored after the call


def test_each_attempt_inherits_its_attempt_timeout_when_shorter() -> None:
    clock = FakeClock()
    resilience = Resilience(
        strategy=microcall.retry(2, attempt_timeout=0.2, backoff=STEADY),
        on=ConnectionError,
        clock=clock,
        sleep=clock.advance,
    )
    seen: list[float] = []

    def query() -> None:
        deadline = microcall.current_deadline()
        assert deadline is not None
        seen.append(deadline.remaining())
        clock.advance(0.5)  # a thread cannot be interrupted: it runs past its time
        raise ConnectionError("reset")

    with pytest.raises(AttemptsExhausted):
        resilience.call(query)
    assert seen == [pytest.approx(0.2), pytest.approx(0.2)]


def test_a_late_answer_is_still_returned() -> None:
    clock = FakeClock()
    resilience, _ = retrying(clock, timeout=1.0)

    def slow() -> str:
        clock.advance(3.0)
        return "finally"

    assert resilience.call(slow) == "finally"


def test_an_empty_retry_budget_refuses_the_retry_and_the_record_shows_it() -> None:
    clock = FakeClock()
    empty = RetryBudget(RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0))
    resilience, _ = retrying(clock, budget=empty)
    flaky = Flaky(ConnectionError("reset"), value=1)
    with pytest.raises(AttemptsExhausted) as raised:
        resilience.call(flaky)
    assert flaky.calls == 1
    refused = raised.value.attempts[1]
    assert (refused.sent, refused.kind, refused.error) == (
        False,
        AttemptKind.RETRY,
        "retry budget empty",
    )
    assert empty.refused == 1
    assert empty.deposited == 1


def test_the_retry_budget_is_deposited_into_once_per_call() -> None:
    clock = FakeClock()
    budget = RetryBudget()
    resilience, _ = retrying(clock, budget=budget)
    for _ in range(4):
        resilience.call(Flaky(ConnectionError("reset"), value=1))
    assert (budget.deposited, budget.withdrawn) == (4, 4)


def test_keyboard_interrupt_is_never_retried_and_observers_hear_the_end() -> None:
    from tests.resilience.conftest import Recorder

    clock = FakeClock()
    recorder = Recorder()
    resilience, _ = retrying(clock, on=Exception, observers=[recorder])

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resilience.call(interrupted)
    (call,) = recorder.calls
    assert call.ended is not None
    assert isinstance(call.ended[1], KeyboardInterrupt)
    assert [a.cancelled for a in call.attempts_ended] == [True]
