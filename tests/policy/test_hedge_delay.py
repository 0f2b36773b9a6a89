"""Learned hedge delay: a windowed latency percentile per route, on a fake clock."""

from __future__ import annotations

import math
import random

import pytest

from microcall.errors import ConfigurationError
from microcall.policy.hedge_delay import LearnedDelay, LearnedDelayConfig
from microcall.testing import FakeClock

ROUTE = "GET /books/{id}"


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_extra_load": 0},
        {"max_extra_load": 1},
        {"max_extra_load": -0.1},
        {"floor": 0.5, "ceiling": 0.1},
        {"floor": -1},
        {"ceiling": math.inf},
        {"initial": 0},
        {"min_samples": 0},
        {"slices": 0},
        {"max_routes": 0},
        {"refresh_every": 1.5},
        {"window": 0},
        {"relative_accuracy": 0},
    ],
)
def test_bad_config_is_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LearnedDelayConfig(**kwargs)  # type: ignore[arg-type]


def test_the_percentile_follows_max_extra_load() -> None:
    assert LearnedDelayConfig(max_extra_load=0.05).quantile == pytest.approx(0.95)
    assert LearnedDelayConfig(max_extra_load=0.01).quantile == pytest.approx(0.99)


def test_an_unknown_route_gets_the_fixed_delay_and_is_not_remembered() -> None:
    learned = LearnedDelay(LearnedDelayConfig(initial=0.03))
    assert learned.delay("GET /nowhere", 0.0) == 0.03
    assert len(learned) == 0


def test_fixed_delay_until_min_samples() -> None:
    learned = LearnedDelay(LearnedDelayConfig(initial=0.05, min_samples=100, refresh_every=1))
    for _ in range(99):
        learned.observe(ROUTE, 0.010, 0.0)
    assert learned.delay(ROUTE, 0.0) == 0.05
    learned.observe(ROUTE, 0.010, 0.0)
    assert learned.delay(ROUTE, 0.1) == pytest.approx(0.010, rel=0.02)


@pytest.mark.parametrize("max_extra_load", [0.05, 0.01, 0.2])
def test_converges_to_the_quantile_of_lognormal_latencies(max_extra_load: float) -> None:
    rng = random.Random(7)
    learned = LearnedDelay(LearnedDelayConfig(max_extra_load=max_extra_load, ceiling=10.0))
    clock = FakeClock()
    latencies = []
    for _ in range(20_000):
        latency = rng.lognormvariate(math.log(0.005), 0.6)
        latencies.append(latency)
        learned.observe(ROUTE, latency, clock.now())
        clock.advance(0.001)
    clock.advance(1.0)  # past the refresh interval
    expected = exact_quantile(latencies, 1 - max_extra_load)
    assert learned.delay(ROUTE, clock.now()) == pytest.approx(expected, rel=0.03)


def test_converges_on_the_benchmark_mix() -> None:
    """97% take 2-4 ms, 2% take 50 ms, 1% take 500 ms: the p95 is inside the fast bulk."""
    rng = random.Random(11)
    learned = LearnedDelay(LearnedDelayConfig(max_extra_load=0.05))
    latencies = []
    for i in range(10_000):
        draw = rng.random()
        latency = rng.uniform(0.002, 0.004) if draw < 0.97 else 0.05 if draw < 0.99 else 0.5
        latencies.append(latency)
        learned.observe(ROUTE, latency, i * 0.002)
    delay = learned.delay(ROUTE, 20.0)
    assert delay == pytest.approx(exact_quantile(latencies, 0.95), rel=0.03)
    assert 0.0036 < delay < 0.0041


def test_floor_and_ceiling() -> None:
    learned = LearnedDelay(LearnedDelayConfig(floor=0.002, ceiling=0.5, min_samples=10))
    for _ in range(50):
        learned.observe("fast", 0.0001, 0.0)
        learned.observe("slow", 4.0, 0.0)
    assert learned.delay("fast", 0.0) == 0.002
    assert learned.delay("slow", 0.0) == 0.5


def test_old_samples_age_out_of_the_window() -> None:
    config = LearnedDelayConfig(window=30.0, slices=6, min_samples=50)
    learned = LearnedDelay(config)
    clock = FakeClock(start=0.0)
    while clock.now() < 30.0:
        learned.observe(ROUTE, 0.010, clock.now())
        clock.advance(0.1)
    assert learned.delay(ROUTE, clock.now()) == pytest.approx(0.010, rel=0.02)
    while clock.now() < 60.0:  # the backend slows down for good
        learned.observe(ROUTE, 0.100, clock.now())
        clock.advance(0.1)
    assert learned.samples(ROUTE, clock.now()) <= 300
    assert learned.delay(ROUTE, clock.now()) == pytest.approx(0.100, rel=0.02)
    clock.advance(30.0)  # silence: nothing left in the window
    assert learned.samples(ROUTE, clock.now()) == 0
    assert learned.delay(ROUTE, clock.now()) == config.initial


def test_the_delay_is_cached_between_refreshes() -> None:
    learned = LearnedDelay(LearnedDelayConfig(refresh_every=100, refresh_interval=1.0))
    for _ in range(200):
        learned.observe(ROUTE, 0.010, 0.0)
    assert learned.delay(ROUTE, 0.0) == pytest.approx(0.010, rel=0.02)
    for _ in range(99):
        learned.observe(ROUTE, 1.0, 0.5)
    assert learned.delay(ROUTE, 0.5) == pytest.approx(0.010, rel=0.02)  # cached
    learned.observe(ROUTE, 1.0, 0.5)  # the 100th new observation
    assert learned.delay(ROUTE, 0.5) == pytest.approx(1.0, rel=0.02)
    learned.observe(ROUTE, 0.010, 0.6)
    assert learned.delay(ROUTE, 0.7) == pytest.approx(1.0, rel=0.02)  # cached
    assert learned.delay(ROUTE, 1.5) == pytest.approx(1.0, rel=0.02)  # refreshed, same answer


def test_refreshes_at_most_ten_times_a_second() -> None:
    learned = LearnedDelay(LearnedDelayConfig(refresh_every=10))
    for _ in range(200):
        learned.observe(ROUTE, 0.010, 0.0)
    assert learned.delay(ROUTE, 0.0) == pytest.approx(0.010, rel=0.02)
    for _ in range(1000):
        learned.observe(ROUTE, 1.0, 0.05)
    assert learned.delay(ROUTE, 0.05) == pytest.approx(0.010, rel=0.02)  # too soon
    assert learned.delay(ROUTE, 0.1) == pytest.approx(1.0, rel=0.02)


def test_routes_are_bounded_least_recently_used_first_out() -> None:
    learned = LearnedDelay(LearnedDelayConfig(max_routes=10, min_samples=1, refresh_every=1))
    learned.observe("kept", 0.2, 0.0)
    for i in range(10_000):
        learned.observe(f"GET /hostile/{i}", 0.010, 0.0)
        if i % 5 == 0:
            learned.delay("kept", 0.0)  # read often: stays
    assert len(learned) == 10
    assert learned.samples("kept", 0.0) == 1
    assert learned.samples("GET /hostile/0", 0.0) == 0
    assert learned.samples("GET /hostile/9999", 0.0) == 1


def test_non_finite_latencies_are_ignored_and_negative_ones_clamped() -> None:
    learned = LearnedDelay(LearnedDelayConfig(min_samples=1, floor=0.001, refresh_every=1))
    learned.observe(ROUTE, math.nan, 0.0)
    learned.observe(ROUTE, math.inf, 0.0)
    assert len(learned) == 0
    learned.observe(ROUTE, -5.0, 0.0)
    assert learned.delay(ROUTE, 0.0) == 0.001


def test_a_time_from_the_past_counts_in_the_newest_slice() -> None:
    learned = LearnedDelay(LearnedDelayConfig(window=30.0, slices=6))
    learned.observe(ROUTE, 0.01, 100.0)
    learned.observe(ROUTE, 0.01, 70.0)  # would land in a slot of the same ring position
    assert learned.samples(ROUTE, 100.0) == 2
