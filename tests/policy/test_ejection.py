"""Outlier ejection: Envoy's consecutive-failure rule on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microcall.errors import ConfigurationError
from microcall.policy.ejection import Ejection, OutlierDetector, OutlierEjectionConfig
from microcall.testing import FakeClock

A, B, C = "http://a:1", "http://b:1", "http://c:1"


def fail(detector: OutlierDetector, endpoint: str, now: float, times: int = 5) -> float | None:
    """Report ``times`` failures; the length of the ejection the last one caused, if any."""
    event = None
    for _ in range(times):
        event = detector.record(endpoint, False, now)
    return None if event is None else event.until - event.at


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 0},
        {"consecutive_failures": True},
        {"max_ejection_percent": -1},
        {"max_ejection_percent": 101},
        {"base_ejection_time": 0},
        {"base_ejection_time": 60, "max_ejection_time": 30},
        {"interval": 0},
    ],
)
def test_bad_config_is_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        OutlierEjectionConfig(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_envoys() -> None:
    config = OutlierEjectionConfig()
    assert config.consecutive_failures == 5
    assert (config.base_ejection_time, config.max_ejection_time) == (30.0, 300.0)
    assert config.max_ejection_percent == 10.0


@pytest.mark.parametrize(
    ("size", "percent", "expected"),
    [
        (0, 10, 0),
        (1, 10, 0),
        (1, 100, 0),
        (2, 10, 1),
        (3, 10, 1),
        (10, 10, 1),
        (20, 10, 2),
        (100, 10, 10),
        (3, 100, 2),
        (5, 0, 0),
    ],
)
def test_how_many_may_be_ejected(size: int, percent: float, expected: int) -> None:
    assert OutlierEjectionConfig(max_ejection_percent=percent).max_ejected(size) == expected


def test_five_consecutive_failures_eject() -> None:
    events: list[Ejection] = []
    detector = OutlierDetector([A, B, C], listeners=[events.append])
    fail(detector, A, 100.0, times=4)
    assert not detector.is_ejected(A, 100.0)
    detector.record(A, False, 100.0)
    assert detector.is_ejected(A, 100.0)
    assert detector.ejected(100.0) == [A]
    assert events == [Ejection(A, 100.0, 130.0, 1)]
    assert detector.ejections == 1


def test_a_success_resets_the_count() -> None:
    detector = OutlierDetector([A, B, C])
    fail(detector, A, 0.0, times=4)
    detector.record(A, True, 0.0)
    fail(detector, A, 0.0, times=4)
    assert not detector.is_ejected(A, 0.0)


def test_the_ejection_ends_on_time() -> None:
    detector = OutlierDetector([A, B, C])
    fail(detector, A, 0.0)
    assert detector.is_ejected(A, 29.999)
    assert not detector.is_ejected(A, 30.0)


def test_ejection_time_grows_with_each_ejection_up_to_the_cap() -> None:
    clock = FakeClock(start=0.0)
    detector = OutlierDetector([A, B, C])
    durations = []
    for _ in range(12):
        duration = fail(detector, A, clock.now())
        assert duration is not None
        durations.append(duration)
        clock.advance(duration)  # back, and failing again at once
    assert durations == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]


def test_healthy_time_brings_the_ejection_time_back_down() -> None:
    detector = OutlierDetector([A, B, C])
    assert fail(detector, A, 0.0) == 30  # back at 30
    assert fail(detector, A, 30.0) == 60  # back at 90
    assert fail(detector, A, 90.0) == 90  # back at 180
    # 15 s healthy is one 10 s interval: n goes 3 -> 2, then 3 with this ejection.
    assert fail(detector, A, 195.0) == 90
    # 1000 s healthy: from the base time again.
    assert fail(detector, A, 1285.0) == 30


def test_outcomes_while_ejected_do_not_extend_it() -> None:
    detector = OutlierDetector([A, B, C])
    fail(detector, A, 0.0)
    fail(detector, A, 10.0, times=20)
    assert not detector.is_ejected(A, 30.0)
    assert detector.ejections == 1


def test_never_every_endpoint() -> None:
    detector = OutlierDetector([A, B], OutlierEjectionConfig(max_ejection_percent=100))
    fail(detector, A, 0.0)
    fail(detector, B, 0.0, times=50)
    assert detector.ejected(0.0) == [A]


def test_a_lone_endpoint_is_never_ejected() -> None:
    detector = OutlierDetector([A])
    fail(detector, A, 0.0, times=100)
    assert not detector.is_ejected(A, 0.0)


def test_over_the_limit_the_next_failure_ejects_once_there_is_room() -> None:
    detector = OutlierDetector([A, B, C])  # 10% of 3: one at a time
    fail(detector, A, 0.0)
    fail(detector, B, 0.0)
    assert detector.ejected(0.0) == [A]
    detector.record(B, False, 30.0)  # A is back: room for B
    assert detector.ejected(30.0) == [B]


def test_unknown_endpoints_are_ignored() -> None:
    detector = OutlierDetector([A, B, C])
    assert detector.record("http://elsewhere", False, 0.0) is None
    assert not detector.is_ejected("http://elsewhere", 0.0)


def test_update_keeps_history_and_never_leaves_all_ejected() -> None:
    detector = OutlierDetector([A, B, C])
    fail(detector, A, 0.0)
    detector.update([A, B, C, "http://d:1"], 1.0)
    assert detector.is_ejected(A, 1.0)
    detector.update([A], 2.0)  # only the ejected one is left
    assert not detector.is_ejected(A, 2.0)
    detector.update([A, B], 3.0)
    fail(detector, A, 3.0)
    assert detector.is_ejected(A, 3.0)
    assert detector.record(A, False, 3.0) is None


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 6),
    percent=st.floats(0, 100),
    steps=st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.floats(0, 20)), max_size=300),
)
def test_never_more_than_the_limit_and_never_all(
    size: int, percent: float, steps: list[tuple[int, bool, float]]
) -> None:
    addresses = [f"http://e{i}:1" for i in range(size)]
    config = OutlierEjectionConfig(max_ejection_percent=percent)
    detector = OutlierDetector(addresses, config)
    clock = FakeClock(start=0.0)
    for which, success, wait in steps:
        detector.record(addresses[which % size], success, clock.now())
        ejected = detector.ejected(clock.now())
        assert len(ejected) <= config.max_ejected(size)
        assert len(ejected) < size
        clock.advance(wait)
