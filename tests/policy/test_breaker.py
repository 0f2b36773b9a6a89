"""Circuit breaker transitions on a fake clock."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microcall.errors import ConfigurationError
from microcall.policy.breaker import (
    BreakerState,
    BreakerStateChange,
    CircuitBreaker,
    CircuitBreakerConfig,
)
from microcall.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

CONFIG = CircuitBreakerConfig(
    failure_threshold=0.5,
    minimum_throughput=10,
    sampling_duration=10.0,
    break_duration=5.0,
    half_open_probes=2,
)


def make(config: CircuitBreakerConfig = CONFIG) -> tuple[CircuitBreaker, list[BreakerStateChange]]:
    events: list[BreakerStateChange] = []
    return CircuitBreaker("http://a:1", config, listeners=[events.append]), events


def record(breaker: CircuitBreaker, now: float, *, successes: int = 0, failures: int = 0) -> None:
    for _ in range(successes):
        assert breaker.allow(now)
        breaker.record(True, now)
    for _ in range(failures):
        assert breaker.allow(now)
        breaker.record(False, now)


def trip(breaker: CircuitBreaker, now: float) -> None:
    record(breaker, now, failures=breaker.config.minimum_throughput)
    assert breaker.state(now) is OPEN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"failure_threshold": 1.5},
        {"failure_threshold": True},
        {"minimum_throughput": 0},
        {"minimum_throughput": 2.5},
        {"half_open_probes": 0},
        {"sampling_duration": 0},
        {"break_duration": -1},
    ],
)
def test_bad_config_is_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_durations_accept_timedelta() -> None:
    config = CircuitBreakerConfig(break_duration=timedelta(milliseconds=1500))  # type: ignore[arg-type]
    assert config.break_duration == 1.5


def test_starts_closed_and_admits_everything() -> None:
    breaker, events = make()
    record(breaker, 0.0, successes=100)
    assert breaker.state(0.0) is CLOSED
    assert events == []


def test_no_opening_below_minimum_throughput() -> None:
    breaker, events = make()
    record(breaker, 0.0, failures=9)  # 100% failing, but only 9 outcomes
    assert breaker.state(0.0) is CLOSED
    assert events == []


def test_opens_when_the_ratio_reaches_the_threshold() -> None:
    breaker, events = make()
    record(breaker, 0.0, successes=5, failures=4)
    assert breaker.state(0.0) is CLOSED  # 4 of 9: below the minimum of 10 anyway
    record(breaker, 1.0, failures=1)  # 5 of 10 = 0.5
    assert breaker.state(1.0) is OPEN
    assert events == [BreakerStateChange("http://a:1", CLOSED, OPEN, 1.0)]


def test_stays_closed_below_the_threshold() -> None:
    breaker, _ = make()
    record(breaker, 0.0, successes=11, failures=10)  # 10 of 21 < 0.5
    assert breaker.state(0.0) is CLOSED


def test_old_outcomes_leave_the_sampling_window() -> None:
    clock = FakeClock()
    breaker, _ = make()
    record(breaker, clock.now(), failures=9)
    clock.advance(10.0)  # past the sampling duration: those 9 are forgotten
    record(breaker, clock.now(), failures=1)
    assert breaker.state(clock.now()) is CLOSED
    record(breaker, clock.now(), failures=8)
    assert breaker.state(clock.now()) is CLOSED
    record(breaker, clock.now(), failures=1)
    assert breaker.state(clock.now()) is OPEN


def test_open_fails_fast_for_the_break_duration() -> None:
    clock = FakeClock()
    breaker, _ = make()
    trip(breaker, clock.now())
    assert not breaker.allow(clock.now())
    assert not breaker.available(clock.now())
    clock.advance(4.999)
    assert not breaker.allow(clock.now())
    assert breaker.rejected == 2


def test_late_outcomes_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker, events = make()
    trip(breaker, clock.now())
    for _ in range(20):
        breaker.record(True, clock.now())
    assert breaker.state(clock.now()) is OPEN
    assert len(events) == 1


def test_half_open_after_the_break_with_limited_probes() -> None:
    clock = FakeClock(start=100.0)
    breaker, events = make()
    trip(breaker, clock.now())
    clock.advance(7.0)
    assert breaker.available(clock.now())
    assert breaker.state(clock.now()) is HALF_OPEN
    # The change is dated when the break ended, not when it was noticed.
    assert events[-1] == BreakerStateChange("http://a:1", OPEN, HALF_OPEN, 105.0)
    assert breaker.allow(clock.now())
    assert breaker.allow(clock.now())
    assert not breaker.available(clock.now())
    assert not breaker.allow(clock.now())  # two probes already out


def test_a_successful_probe_closes_with_a_clean_window() -> None:
    clock = FakeClock()
    breaker, events = make()
    trip(breaker, clock.now())
    clock.advance(5.0)
    assert breaker.allow(clock.now())
    breaker.record(True, clock.now())
    assert breaker.state(clock.now()) is CLOSED
    assert [(e.old, e.new) for e in events] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    record(breaker, clock.now(), failures=9)  # the failures before opening are gone
    assert breaker.state(clock.now()) is CLOSED


def test_a_failed_probe_reopens_for_another_break() -> None:
    clock = FakeClock()
    breaker, events = make()
    trip(breaker, clock.now())
    clock.advance(5.0)
    assert breaker.allow(clock.now())
    breaker.record(False, clock.now())
    assert breaker.state(clock.now()) is OPEN
    clock.advance(4.0)
    assert not breaker.allow(clock.now())
    clock.advance(1.0)
    assert breaker.allow(clock.now())
    assert [(e.old, e.new) for e in events] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
    ]


def test_release_gives_a_probe_slot_back() -> None:
    clock = FakeClock()
    breaker, _ = make(CircuitBreakerConfig(minimum_throughput=1, half_open_probes=1))
    trip(breaker, clock.now())
    clock.advance(5.0)
    assert breaker.allow(clock.now())
    assert not breaker.allow(clock.now())
    breaker.release(clock.now())  # the probe was cancelled: no verdict
    assert breaker.state(clock.now()) is HALF_OPEN
    assert breaker.allow(clock.now())


def test_a_lost_probe_frees_its_slot_after_a_break() -> None:
    clock = FakeClock()
    breaker, _ = make(CircuitBreakerConfig(minimum_throughput=1, half_open_probes=1))
    trip(breaker, clock.now())
    clock.advance(5.0)
    assert breaker.allow(clock.now())  # never reported
    clock.advance(4.0)
    assert not breaker.allow(clock.now())
    clock.advance(1.0)
    assert breaker.allow(clock.now())


def test_listeners_added_later_are_heard() -> None:
    listeners: list[object] = []
    shared: list[BreakerStateChange] = []
    a = CircuitBreaker("a", CONFIG, listeners=listeners)  # type: ignore[arg-type]
    b = CircuitBreaker("b", CONFIG, listeners=listeners)  # type: ignore[arg-type]
    listeners.append(shared.append)
    trip(a, 0.0)
    trip(b, 0.0)
    assert [e.endpoint for e in shared] == ["a", "b"]


# ---------------------------------------------------------------- properties

ALLOWED = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}

steps = st.lists(
    st.one_of(
        st.tuples(st.just("allow"), st.just(0.0)),
        st.tuples(st.just("success"), st.just(0.0)),
        st.tuples(st.just("failure"), st.just(0.0)),
        st.tuples(st.just("release"), st.just(0.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 8.0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    probes=st.integers(1, 3),
    minimum=st.integers(1, 5),
    threshold=st.floats(0.1, 1.0),
)
def test_only_the_four_transitions_ever_happen(
    steps: list[tuple[str, float]], probes: int, minimum: int, threshold: float
) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=threshold,
        minimum_throughput=minimum,
        sampling_duration=10.0,
        break_duration=5.0,
        half_open_probes=probes,
    )
    breaker, events = make(config)
    clock = FakeClock()
    for action, amount in steps:
        now = clock.now()
        if action == "wait":
            clock.advance(amount)
        elif action == "allow":
            state = breaker.state(now)
            admitted = breaker.allow(now)
            if state is OPEN:
                assert not admitted  # open always fails fast
            if state is CLOSED:
                assert admitted
        elif action == "release":
            breaker.release(now)
        else:
            breaker.record(action == "success", now)
    for previous, event in itertools.pairwise(events):
        assert event.old is previous.new
        assert event.at >= previous.at
    assert all((e.old, e.new) in ALLOWED for e in events)
    assert all(not (e.old is CLOSED and e.new is HALF_OPEN) for e in events)
    if events:
        assert events[0].old is CLOSED


@settings(max_examples=200, deadline=None)
@given(probes=st.integers(1, 5), attempts=st.integers(0, 20))
def test_half_open_never_admits_more_than_the_probes(probes: int, attempts: int) -> None:
    breaker, _ = make(CircuitBreakerConfig(minimum_throughput=1, half_open_probes=probes))
    trip(breaker, 0.0)
    admitted = sum(breaker.allow(5.0) for _ in range(attempts))
    assert admitted == min(attempts, probes)
