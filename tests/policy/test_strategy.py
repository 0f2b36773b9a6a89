"""Strategy plans driven by hand: the test plays the engine, with ``now`` as a plain float.

The hand-written tests pin the action sequences; the properties at the end
run every plan against random outcomes, verdicts and timings in a small
simulation of the engine's loop and check the guarantees the strategy module
promises.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microcall import AttemptKind, Backoff, Verdict, hedged, retry, single
from microcall.errors import ConfigurationError
from microcall.policy.strategy import (
    MAX_HEDGED_ATTEMPTS,
    MAX_RETRY_ATTEMPTS,
    Action,
    Finish,
    Hedged,
    Plan,
    Retry,
    Send,
    SingleAttempt,
    Strategy,
    Wait,
)

T0 = 1000.0
FLOOR = 0.005

SEND_FIRST = Send(AttemptKind.FIRST)
SEND_RETRY = Send(AttemptKind.RETRY)
SEND_HEDGE = Send(AttemptKind.HEDGE)
WAIT_FOR_OUTCOME = Wait(None)

# No jitter: the backoff is exactly 0.1, 0.2, 0.4, ... so the waits can be spelled out.
STEADY = Backoff(base=0.1, multiplier=2.0, cap=1.0, jitter=False)


def wait_until(until: float) -> object:
    """Wait(until), compared with a float tolerance (T0 + 0.1 is not exact in binary)."""
    return Wait(pytest.approx(until))  # type: ignore[arg-type]


def make_plan(strategy: Strategy, *, budget: float = 1.0, floor: float = FLOOR) -> Plan:
    return strategy.plan(expires_at=T0 + budget, floor=floor, rng=random.Random(7))


# ---------------------------------------------------------------- single


def test_single_sends_once_and_finishes_with_it() -> None:
    plan = make_plan(single())
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0 + 0.01, None)
    # A retriable failure changes nothing: one attempt is all this strategy makes.
    assert plan.decide(T0 + 0.01) == Finish(0)
    assert plan.attempt_timeout is None


def test_single_finishes_without_sending_when_too_little_time_remains() -> None:
    plan = make_plan(single(), budget=FLOOR / 2)
    assert plan.decide(T0) == Finish(None)


def test_single_sends_with_exactly_the_floor_left() -> None:
    # Binary fractions, so T0 + budget - T0 is exactly the floor.
    plan = make_plan(single(), budget=0.25, floor=0.25)
    assert plan.decide(T0) == SEND_FIRST


def test_single_waits_for_its_attempt_before_finishing() -> None:
    plan = make_plan(single())
    assert plan.decide(T0) == SEND_FIRST
    # The Plan contract: Finish(i) means attempt i's outcome is the result, so
    # it cannot be given before that outcome was reported.
    assert plan.decide(T0) == WAIT_FOR_OUTCOME


def test_single_factory_returns_the_shared_value() -> None:
    assert single() is single()
    assert isinstance(single(), SingleAttempt)


# ---------------------------------------------------------------- retry


def test_retry_success_on_the_first_attempt() -> None:
    plan = make_plan(retry(3, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0 + 0.01) == WAIT_FOR_OUTCOME
    plan.finished(0, Verdict.ACCEPT, T0 + 0.02, None)
    assert plan.decide(T0 + 0.02) == Finish(0)


def test_retry_backs_off_exponentially_between_retriable_failures() -> None:
    plan = make_plan(retry(3, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0 + 0.01, None)
    assert plan.decide(T0 + 0.01) == wait_until(T0 + 0.11)
    # Waking early (a spurious wake-up) only waits again.
    assert plan.decide(T0 + 0.05) == wait_until(T0 + 0.11)
    assert plan.decide(T0 + 0.11) == SEND_RETRY
    plan.finished(1, Verdict.RETRY, T0 + 0.12, None)
    assert plan.decide(T0 + 0.12) == wait_until(T0 + 0.32)
    assert plan.decide(T0 + 0.32) == SEND_RETRY
    plan.finished(2, Verdict.RETRY, T0 + 0.33, None)
    # Attempts used up: the last failure is the result.
    assert plan.decide(T0 + 0.33) == Finish(2)


def test_retry_succeeds_after_failures() -> None:
    plan = make_plan(retry(3, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0, None)
    assert plan.decide(T0 + 0.1) == SEND_RETRY
    plan.finished(1, Verdict.ACCEPT, T0 + 0.15, None)
    assert plan.decide(T0 + 0.15) == Finish(1)


def test_retry_stop_verdict_ends_the_call_at_once() -> None:
    plan = make_plan(retry(5, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.STOP, T0 + 0.01, None)
    assert plan.decide(T0 + 0.01) == Finish(0)


def test_retry_jittered_backoff_stays_within_its_bound() -> None:
    backoff = Backoff(base=0.1, multiplier=2.0, cap=1.0)
    for seed in range(50):
        plan = retry(3, backoff=backoff).plan(
            expires_at=T0 + 10, floor=FLOOR, rng=random.Random(seed)
        )
        assert plan.decide(T0) == SEND_FIRST
        plan.finished(0, Verdict.RETRY, T0, None)
        action = plan.decide(T0)
        if action == SEND_RETRY:  # the draw was exactly zero
            continue
        assert isinstance(action, Wait)
        assert action.until is not None
        assert T0 < action.until <= T0 + 0.1


def test_retry_after_longer_than_the_backoff_is_honoured() -> None:
    plan = make_plan(retry(3, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0, 0.5)
    assert plan.decide(T0) == Wait(T0 + 0.5)


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    plan = make_plan(retry(3, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0, 0.01)
    assert plan.decide(T0) == wait_until(T0 + 0.1)


def test_retry_after_beyond_the_deadline_ends_with_the_last_outcome() -> None:
    plan = make_plan(retry(3, backoff=STEADY), budget=1.0)
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0 + 0.01, 5.0)
    assert plan.decide(T0 + 0.01) == Finish(0)


def test_retry_backoff_that_leaves_less_than_the_floor_ends_the_call() -> None:
    plan = make_plan(retry(3, backoff=STEADY), budget=0.1 + FLOOR / 2)
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0, None)
    assert plan.decide(T0) == Finish(0)


def test_retry_waking_late_past_the_last_start_finishes() -> None:
    plan = make_plan(retry(3, backoff=STEADY), budget=0.5)
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0, None)
    assert plan.decide(T0) == wait_until(T0 + 0.1)
    # The event loop was busy and woke us after the last moment to start.
    assert plan.decide(T0 + 0.5 - FLOOR / 2) == Finish(0)


def test_retry_finishes_without_sending_when_too_little_time_remains() -> None:
    plan = make_plan(retry(3), budget=FLOOR / 2)
    assert plan.decide(T0) == Finish(None)


def test_retry_carries_its_attempt_timeout_into_the_plan() -> None:
    assert make_plan(retry(3, attempt_timeout=0.2)).attempt_timeout == 0.2
    assert make_plan(retry(3, attempt_timeout=timedelta(milliseconds=300))).attempt_timeout == (
        pytest.approx(0.3)
    )


def test_retry_with_one_attempt_never_retries() -> None:
    plan = make_plan(retry(1, backoff=STEADY))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0, None)
    assert plan.decide(T0) == Finish(0)


# ---------------------------------------------------------------- hedged


def test_hedge_is_sent_after_the_delay_and_the_faster_wins() -> None:
    plan = make_plan(hedged(0.05))
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0) == wait_until(T0 + 0.05)
    assert plan.decide(T0 + 0.05) == SEND_HEDGE
    # Both attempts out and none left to send: wait for an outcome.
    assert plan.decide(T0 + 0.05) == WAIT_FOR_OUTCOME
    plan.finished(1, Verdict.ACCEPT, T0 + 0.06, None)
    assert plan.decide(T0 + 0.06) == Finish(1)


def test_hedges_are_spaced_by_the_delay() -> None:
    plan = make_plan(hedged(0.05, attempts=3))
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0 + 0.05) == SEND_HEDGE
    assert plan.decide(T0 + 0.05) == wait_until(T0 + 0.10)
    assert plan.decide(T0 + 0.10) == SEND_HEDGE
    assert plan.decide(T0 + 0.10) == WAIT_FOR_OUTCOME


def test_answer_before_the_delay_sends_no_hedge() -> None:
    plan = make_plan(hedged(0.05))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.ACCEPT, T0 + 0.01, None)
    assert plan.decide(T0 + 0.01) == Finish(0)


def test_retriable_failure_sends_the_next_attempt_at_once() -> None:
    plan = make_plan(hedged(0.05))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0 + 0.01, None)
    # Nothing is running any more, so the next attempt is a retry, not a hedge.
    assert plan.decide(T0 + 0.01) == SEND_RETRY
    plan.finished(1, Verdict.ACCEPT, T0 + 0.02, None)
    assert plan.decide(T0 + 0.02) == Finish(1)


def test_retriable_failure_while_another_runs_hedges_at_once() -> None:
    plan = make_plan(hedged(0.05, attempts=3))
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0 + 0.05) == SEND_HEDGE
    plan.finished(1, Verdict.RETRY, T0 + 0.06, None)
    # Attempt 0 still runs; the failed hedge is replaced without waiting out the delay.
    assert plan.decide(T0 + 0.06) == SEND_HEDGE


def test_retry_after_sets_the_earliest_next_attempt() -> None:
    plan = make_plan(hedged(0.05))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0 + 0.01, 0.2)
    assert plan.decide(T0 + 0.01) == wait_until(T0 + 0.21)
    assert plan.decide(T0 + 0.21) == SEND_RETRY


def test_retry_after_also_delays_hedges_of_a_running_attempt() -> None:
    plan = make_plan(hedged(0.05, attempts=3))
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0 + 0.05) == SEND_HEDGE
    plan.finished(1, Verdict.RETRY, T0 + 0.06, 0.3)
    assert plan.decide(T0 + 0.06) == wait_until(T0 + 0.36)


def test_retry_after_beyond_the_deadline_ends_with_the_failure() -> None:
    plan = make_plan(hedged(0.05), budget=1.0)
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.RETRY, T0 + 0.01, 5.0)
    assert plan.decide(T0 + 0.01) == Finish(0)


def test_hedged_all_attempts_failing_ends_with_the_last_failure() -> None:
    plan = make_plan(hedged(0.05))
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0 + 0.05) == SEND_HEDGE
    plan.finished(1, Verdict.RETRY, T0 + 0.06, None)
    assert plan.decide(T0 + 0.06) == WAIT_FOR_OUTCOME
    plan.finished(0, Verdict.RETRY, T0 + 0.07, None)
    assert plan.decide(T0 + 0.07) == Finish(0)


def test_hedged_stop_verdict_ends_the_call() -> None:
    plan = make_plan(hedged(0.05, attempts=3))
    assert plan.decide(T0) == SEND_FIRST
    plan.finished(0, Verdict.STOP, T0 + 0.01, None)
    assert plan.decide(T0 + 0.01) == Finish(0)


def test_no_hedge_when_its_time_is_past_the_last_start() -> None:
    plan = make_plan(hedged(0.5), budget=0.3)
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0) == WAIT_FOR_OUTCOME
    plan.finished(0, Verdict.ACCEPT, T0 + 0.2, None)
    assert plan.decide(T0 + 0.2) == Finish(0)


def test_hedged_finishes_without_sending_when_too_little_time_remains() -> None:
    plan = make_plan(hedged(0.05), budget=FLOOR / 2)
    assert plan.decide(T0) == Finish(None)


def test_hedged_plan_keeps_waiting_for_running_attempts_after_the_deadline() -> None:
    # The engine bounds each attempt by the deadline; the plan just waits for it.
    plan = make_plan(hedged(0.05), budget=0.1)
    assert plan.decide(T0) == SEND_FIRST
    assert plan.decide(T0 + 0.05) == SEND_HEDGE
    assert plan.decide(T0 + 0.2) == WAIT_FOR_OUTCOME
    plan.finished(0, Verdict.STOP, T0 + 0.2, None)
    assert plan.decide(T0 + 0.2) == Finish(0)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("attempts", [0, -1, MAX_RETRY_ATTEMPTS + 1])
def test_retry_refuses_attempts_out_of_range(attempts: int) -> None:
    with pytest.raises(ConfigurationError, match="attempts"):
        retry(attempts)


@pytest.mark.parametrize("attempts", [0, MAX_HEDGED_ATTEMPTS + 1])
def test_hedged_refuses_attempts_out_of_range(attempts: int) -> None:
    with pytest.raises(ConfigurationError, match="attempts"):
        hedged(0.05, attempts=attempts)


@pytest.mark.parametrize("delay", [0, -0.1, math.nan, math.inf])
def test_hedged_refuses_a_bad_delay(delay: float) -> None:
    with pytest.raises(ConfigurationError, match="hedge delay"):
        hedged(delay)


@pytest.mark.parametrize("limit", [0, -1.0, math.nan, math.inf])
def test_attempt_timeout_must_be_positive_and_finite(limit: float) -> None:
    with pytest.raises(ConfigurationError, match="attempt_timeout"):
        retry(3, attempt_timeout=limit)
    with pytest.raises(ConfigurationError, match="attempt_timeout"):
        Hedged(attempt_timeout=limit)


def test_hedged_accepts_a_timedelta_delay() -> None:
    assert hedged(timedelta(milliseconds=20)).delay == pytest.approx(0.02)
    assert Hedged(delay=timedelta(milliseconds=20)).delay == pytest.approx(0.02)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempts", [2.5, True])
def test_attempts_must_be_an_integer(attempts: object) -> None:
    with pytest.raises(ConfigurationError):
        Retry(attempts=attempts)  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties


@dataclass(frozen=True)
class Outcome:
    """What the simulated attempt does: how long it runs and how it is judged."""

    duration: float
    verdict: Verdict
    retry_after: float | None


@dataclass
class Trace:
    """Every decision of one simulated call, with what was true when it was made."""

    strategy: Strategy
    expires_at: float
    floor: float
    limit: int
    steps: list[tuple[float, Action, int]] = field(default_factory=list)
    finished_indexes: list[set[int]] = field(default_factory=list)

    @property
    def sends(self) -> list[float]:
        return [now for now, action, _ in self.steps if isinstance(action, Send)]

    @property
    def final(self) -> Action:
        return self.steps[-1][1]


def seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


backoffs = st.builds(
    Backoff,
    base=seconds(0.0, 1.0),
    multiplier=seconds(1.0, 4.0),
    cap=seconds(0.0, 2.0),
    jitter=st.booleans(),
)
plan_strategies: st.SearchStrategy[Strategy] = st.one_of(
    st.just(SingleAttempt()),
    st.builds(Retry, attempts=st.integers(1, MAX_RETRY_ATTEMPTS), backoff=backoffs),
    st.builds(Hedged, attempts=st.integers(1, MAX_HEDGED_ATTEMPTS), delay=seconds(0.0001, 1.0)),
)
outcomes = st.lists(
    st.builds(
        Outcome,
        duration=seconds(0.0, 2.0),
        verdict=st.sampled_from(Verdict),
        retry_after=st.none() | seconds(0.0, 5.0),
    ),
    min_size=1,
    max_size=25,
)
# How late the event loop wakes the engine after a wait (a loaded machine).
latenesses = st.lists(seconds(0.0, 0.05), max_size=10)

MAX_STEPS = 500


def attempt_limit(strategy: Strategy) -> int:
    return strategy.attempts if isinstance(strategy, (Retry, Hedged)) else 1


def simulate(
    strategy: Strategy,
    budget: float,
    floor: float,
    script: list[Outcome],
    lateness: list[float],
    seed: int,
) -> Trace:
    """Play the engine's loop against ``strategy`` with scripted attempts, in simulated time.

    As in the engine, each attempt is bounded by the deadline (it times out at
    ``expires_at`` at the latest), outcomes are reported when the engine wakes,
    and a wake-up may come late.
    """
    now = T0
    expires_at = T0 + budget
    plan = strategy.plan(expires_at=expires_at, floor=floor, rng=random.Random(seed))
    trace = Trace(
        strategy=strategy, expires_at=expires_at, floor=floor, limit=attempt_limit(strategy)
    )
    running: dict[int, float] = {}
    finished: set[int] = set()
    sent = 0
    wakes = 0
    for _ in range(MAX_STEPS):
        action = plan.decide(now)
        trace.steps.append((now, action, len(running)))
        trace.finished_indexes.append(set(finished))
        if isinstance(action, Finish):
            return trace
        if isinstance(action, Send):
            outcome = script[sent % len(script)]
            running[sent] = min(now + outcome.duration, max(expires_at, now))
            sent += 1
            continue
        if action.until is None and not running:
            wake = now + 0.001  # the engine would spin; let time pass so the trace ends
        else:
            wake = min([*running.values(), math.inf if action.until is None else action.until])
        late = lateness[wakes % len(lateness)] if lateness else 0.0
        wakes += 1
        now = max(now, wake) + late
        for index, end in sorted(running.items(), key=lambda item: item[1]):
            if end <= now:
                del running[index]
                finished.add(index)
                outcome = script[index % len(script)]
                plan.finished(index, outcome.verdict, now, outcome.retry_after)
    return trace


simulations = st.builds(
    simulate,
    strategy=plan_strategies,
    budget=seconds(-1.0, 3.0),
    floor=seconds(0.0, 0.1),
    script=outcomes,
    lateness=latenesses,
    seed=st.integers(0, 2**32 - 1),
)
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


@PROPERTY_SETTINGS
@given(simulations)
def test_property_no_attempt_is_sent_past_the_last_start(trace: Trace) -> None:
    for now in trace.sends:
        assert now <= trace.expires_at - trace.floor


@PROPERTY_SETTINGS
@given(simulations)
def test_property_never_more_attempts_than_configured(trace: Trace) -> None:
    assert len(trace.sends) <= trace.limit


@PROPERTY_SETTINGS
@given(simulations)
def test_property_plan_finishes_once_nothing_runs_past_the_deadline(trace: Trace) -> None:
    assert isinstance(trace.final, Finish), "the plan never finished"
    for now, action, running in trace.steps:
        if running == 0 and now > trace.expires_at:
            assert isinstance(action, Finish)


@PROPERTY_SETTINGS
@given(simulations)
def test_property_waits_end_by_the_deadline_and_move_forward(trace: Trace) -> None:
    for now, action, running in trace.steps:
        if isinstance(action, Wait):
            if action.until is None:
                assert running > 0, "waiting for an outcome with no attempt running"
            else:
                assert now < action.until <= trace.expires_at


@PROPERTY_SETTINGS
@given(simulations)
def test_property_the_winner_is_an_attempt_that_finished(trace: Trace) -> None:
    if isinstance(trace.strategy, SingleAttempt) and trace.sends:
        return  # a known defect, pinned by test_single_waits_for_its_attempt_before_finishing
    final = trace.final
    assert isinstance(final, Finish)
    finished = trace.finished_indexes[-1]
    if final.winner is None:
        assert not finished
    else:
        assert final.winner in finished
