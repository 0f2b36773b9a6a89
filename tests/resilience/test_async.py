"""Async callables: retries, hedges whose losers are cancelled, attempt timeouts, cancellation."""

from __future__ import annotations

import asyncio

import pytest

import microcall
from microcall import (
    AttemptKind,
    AttemptsExhausted,
    Backoff,
    DeadlineExceeded,
    Resilience,
)
from microcall.testing import FakeClock
from tests.resilience.conftest import Flaky, Recorder

STEADY = Backoff(base=0.1, multiplier=2.0, cap=1.0, jitter=False)


class Hung:
    """An attempt that waits until it is cancelled, and says when it was."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self) -> str:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "never"


async def test_retries_until_success_with_every_backoff_on_the_fake_clock() -> None:
    clock = FakeClock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    flaky = Flaky(ConnectionError("reset"), ConnectionError("reset"), value="row")

    @microcall.resilient(
        strategy=microcall.retry(3, backoff=STEADY), on=ConnectionError, clock=clock, sleep=sleep
    )
    async def fetch(query: str) -> str:
        return str(flaky(query))

    assert await fetch("SELECT 1") == "row"
    assert waits == [pytest.approx(0.1), pytest.approx(0.2)]


async def test_acall_runs_any_awaitable_function_and_exhaustion_raises_one_error() -> None:
    clock = FakeClock()
    resilience = Resilience(
        strategy=microcall.retry(2, backoff=STEADY),
        on=ConnectionError,
        clock=clock,
        sleep=clock.advance,
        name="queue.publish",
    )
    last = ConnectionError("broker gone")

    async def publish(message: str) -> None:
        raise ConnectionError("broker busy") if clock.now() < 1000.05 else last

    with pytest.raises(AttemptsExhausted) as raised:
        await resilience.acall(publish, "hello")
    assert raised.value.__cause__ is last
    assert [a.kind for a in raised.value.attempts] == [AttemptKind.FIRST, AttemptKind.RETRY]


async def test_an_exception_that_is_not_retriable_propagates_as_itself() -> None:
    wrong = KeyError("user")
    flaky = Flaky(wrong)

    async def find() -> object:
        return flaky()

    resilience = Resilience(strategy=microcall.retry(3), on=ConnectionError)
    with pytest.raises(KeyError) as raised:
        await resilience.acall(find)
    assert raised.value is wrong
    assert flaky.calls == 1


async def test_a_hedge_wins_and_the_loser_is_cancelled() -> None:
    hung = Hung()
    runs = 0

    async def query() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            return await hung()
        return "from the hedge"

    recorder = Recorder()
    resilience = Resilience(
        strategy=microcall.hedged(0.01, linger=0), name="search", observers=[recorder]
    )
    assert await resilience.acall(query) == "from the hedge"
    await asyncio.wait_for(hung.cancelled.wait(), timeout=10)
    (call,) = recorder.calls
    assert call.ended is not None
    attempts = call.ended[2]
    assert [(a.kind, a.cancelled) for a in attempts] == [
        (AttemptKind.FIRST, True),
        (AttemptKind.HEDGE, False),
    ]


async def test_a_loser_lingers_and_may_finish_instead_of_being_cancelled() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()
    runs = 0

    async def query() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            await release.wait()
            finished.set()
            return "late"
        return "hedge"

    resilience = Resilience(strategy=microcall.hedged(0.01, linger=30))
    assert await resilience.acall(query) == "hedge"
    release.set()
    await asyncio.wait_for(finished.wait(), timeout=10)  # not cancelled: it ran to its end


async def test_a_retriable_failure_starts_the_next_hedge_at_once() -> None:
    flaky = Flaky(ConnectionError("reset"), value="second")

    async def query() -> object:
        return flaky()

    resilience = Resilience(strategy=microcall.hedged(30.0, attempts=2), on=ConnectionError)
    assert await resilience.acall(query) == "second"  # long before the 30 s hedge delay


async def test_a_learned_hedge_delay_works_for_callables_too() -> None:
    async def query() -> str:
        return "ok"

    resilience = Resilience(strategy=microcall.hedged(), name="learned")
    for _ in range(3):
        assert await resilience.acall(query) == "ok"


async def test_an_attempt_that_outruns_its_attempt_timeout_is_cancelled_and_retried() -> None:
    hung = Hung()
    runs = 0

    async def query() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            return await hung()
        return "second try"

    recorder = Recorder()
    resilience = Resilience(
        strategy=microcall.retry(2, attempt_timeout=0.05, backoff=Backoff(base=0.0)),
        on=ConnectionError,
        observers=[recorder],
    )
    assert await resilience.acall(query) == "second try"
    await asyncio.wait_for(hung.cancelled.wait(), timeout=10)
    attempts = recorder.calls[0].ended[2]  # type: ignore[index]
    assert [a.error for a in attempts] == ["AttemptTimeout", None]


async def test_attempt_timeouts_follow_the_fake_clock() -> None:
    clock = FakeClock()
    hung = Hung()
    runs = 0

    async def query() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            clock.advance(1.0)  # this attempt has now used up its 0.2 s
            return await hung()
        return "second try"

    resilience = Resilience(
        strategy=microcall.retry(2, attempt_timeout=0.2, backoff=Backoff(base=0.0)),
        on=ConnectionError,
        clock=clock,
        sleep=clock.advance,
    )
    assert await resilience.acall(query) == "second try"
    await asyncio.wait_for(hung.cancelled.wait(), timeout=10)


async def test_when_every_attempt_times_out_the_error_says_so() -> None:
    resilience = Resilience(
        strategy=microcall.retry(2, attempt_timeout=0.02, backoff=Backoff(base=0.0)),
        on=ConnectionError,
        name="slow",
    )
    with pytest.raises(AttemptsExhausted) as raised:
        await resilience.acall(Hung())
    assert isinstance(raised.value.__cause__, microcall.AttemptTimeout)
    assert [a.error for a in raised.value.attempts] == ["AttemptTimeout", "AttemptTimeout"]


async def test_the_deadline_cancels_a_running_attempt() -> None:
    hung = Hung()
    resilience = Resilience(timeout=0.05, name="stuck")
    with pytest.raises(DeadlineExceeded) as raised:
        await resilience.acall(hung)
    # Cancelled, not waited for: a callable that ignores cancellation cannot hold its caller.
    await asyncio.wait_for(hung.cancelled.wait(), timeout=10)
    assert [a.error for a in raised.value.attempts] == ["DeadlineExceeded"]


async def test_an_expired_deadline_refuses_the_call_without_running_it() -> None:
    flaky = Flaky(value=1)

    async def query() -> object:
        return flaky()

    with microcall.deadline(0), pytest.raises(DeadlineExceeded):
        await Resilience().acall(query)
    assert flaky.calls == 0


async def test_cancelling_the_caller_cancels_the_attempts_and_observers_hear_it() -> None:
    hung = Hung()
    recorder = Recorder()
    resilience = Resilience(observers=[recorder])
    call = asyncio.create_task(resilience.acall(hung))
    await asyncio.wait_for(hung.started.wait(), timeout=10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(hung.cancelled.wait(), timeout=10)
    ended = recorder.calls[0].ended
    assert ended is not None
    assert isinstance(ended[1], asyncio.CancelledError)
    assert [a.cancelled for a in ended[2]] == [True]


async def test_each_attempt_runs_with_its_deadline_in_its_own_context() -> None:
    seen: list[float] = []

    async def query() -> None:
        deadline = microcall.current_deadline()
        assert deadline is not None
        seen.append(deadline.remaining())

    resilience = Resilience(
        strategy=microcall.retry(2, attempt_timeout=0.5), on=ConnectionError, timeout=5.0
    )
    with microcall.deadline(3.0):
        await resilience.acall(query)
    assert 0 < seen[0] <= 0.5
    assert microcall.current_deadline() is None
