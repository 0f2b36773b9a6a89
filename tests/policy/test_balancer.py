"""Balancer: peak-EWMA stats, power of two choices, round robin, exclusions, on fake time."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter

import pytest

from microcall.errors import ConfigurationError
from microcall.policy.balancer import (
    FAILURE_PENALTY,
    UNMEASURED_PENALTY,
    Balancer,
    BalancerConfig,
    Endpoint,
    EndpointStats,
)
from microcall.policy.breaker import CircuitBreaker, CircuitBreakerConfig
from microcall.policy.ejection import OutlierDetector

A, B, C = "http://a:1", "http://b:1", "http://c:1"


def by_address(balancer: Balancer) -> dict[str, Endpoint]:
    return {e.address: e for e in balancer.endpoints}


def open_breaker(address: str) -> CircuitBreaker:
    breaker = CircuitBreaker(address, CircuitBreakerConfig(minimum_throughput=1))
    breaker.record(False, 0.0)
    return breaker


# ---------------------------------------------------------------- stats


def test_an_unmeasured_endpoint_is_free_when_idle_and_penalised_when_busy() -> None:
    stats = EndpointStats()
    assert stats.latency(0.0) is None
    assert stats.cost(0.0) == 0.0
    stats.start(0.0)
    assert stats.cost(0.0) == UNMEASURED_PENALTY + 1


def test_cost_is_latency_times_outstanding_plus_one() -> None:
    stats = EndpointStats()
    stats.start(0.0)
    stats.finish(0.010, True, 0.0)
    assert stats.outstanding == 0
    assert stats.cost(0.0) == pytest.approx(0.010)
    stats.start(0.0)
    stats.start(0.0)
    assert stats.cost(0.0) == pytest.approx(0.030)


def test_a_peak_replaces_the_estimate_at_once() -> None:
    stats = EndpointStats(decay_time=10.0)
    stats.finish(0.010, True, 0.0)
    stats.finish(0.500, True, 0.001)
    assert stats.latency(0.001) == pytest.approx(0.500)


def test_lower_latencies_pull_the_estimate_down_with_time() -> None:
    stats = EndpointStats(decay_time=10.0)
    stats.finish(0.100, True, 0.0)
    stats.finish(0.010, True, 10.0)  # one time constant later
    weight = math.exp(-1.0)
    decayed = 0.100 * weight
    assert stats.latency(10.0) == pytest.approx(decayed + 0.010 * (1 - weight))


@pytest.mark.parametrize("every", [0.001, 0.1, 1.0])
def test_a_drop_in_latency_is_learnt_with_the_time_constant_however_often_sampled(
    every: float,
) -> None:
    stats = EndpointStats(decay_time=10.0)
    stats.finish(0.100, True, 0.0)
    for step in range(1, round(10.0 / every) + 1):  # one time constant of faster answers
        stats.finish(0.010, True, step * every)
    # An exponential average in time: the gap closes by 1/e per time constant.
    assert stats.latency(10.0) == pytest.approx(0.010 + 0.090 / math.e, rel=1e-6)


def test_the_estimate_decays_toward_zero_while_unused() -> None:
    stats = EndpointStats(decay_time=10.0)
    stats.finish(0.100, True, 0.0)
    assert stats.latency(10.0) == pytest.approx(0.100 / math.e)
    assert stats.latency(100.0) == pytest.approx(0.100 * math.exp(-10))


def test_a_fast_failure_makes_an_endpoint_look_slow_not_fast() -> None:
    """Connection refused comes back in microseconds: it counts as FAILURE_PENALTY at least."""
    stats = EndpointStats()
    stats.finish(0.050, True, 0.0)
    stats.finish(0.0001, False, 0.001)  # connection refused, at once
    assert stats.latency(0.001) == pytest.approx(FAILURE_PENALTY)
    stats.finish(2.0, False, 0.002)  # a longer failure (a timeout) counts as itself
    assert stats.latency(0.002) == pytest.approx(2.0)
    never = EndpointStats()
    never.finish(0.0001, False, 0.0)  # failing from its first attempt
    assert never.latency(0.0) == pytest.approx(FAILURE_PENALTY)


def test_a_penalised_endpoint_is_tried_again_once_its_estimate_decays() -> None:
    stats = EndpointStats()
    stats.finish(0.0001, False, 0.0)
    healthy = 0.002
    # exp(-t / 10) x 1 s falls under 2 ms after about a minute.
    assert stats.latency(50.0) > healthy  # type: ignore[operator]
    assert stats.latency(70.0) < healthy  # type: ignore[operator]


def test_a_cancelled_loser_is_no_failure() -> None:
    stats = EndpointStats()
    stats.finish(0.050, True, 0.0)
    stats.abandon(0.010, 0.001)  # a hedge that lost, stopped early: no penalty, no pull down
    assert stats.latency(0.001) == pytest.approx(0.050, rel=1e-3)
    stats.abandon(0.3, 0.002)  # but it was at least this slow
    assert stats.latency(0.002) == pytest.approx(0.3)


def test_finish_without_start_and_bad_latencies_are_harmless() -> None:
    stats = EndpointStats()
    stats.finish(math.nan, True, 0.0)
    stats.finish(math.inf, True, 0.0)
    assert stats.outstanding == 0
    assert stats.latency(0.0) is None
    stats.finish(-1.0, True, 0.0)
    assert stats.latency(0.0) == 0.0


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("kwargs", [{"mode": "random"}, {"decay_time": 0}, {"decay_time": -1}])
def test_bad_config_is_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        BalancerConfig(**kwargs)  # type: ignore[arg-type]


def test_a_balancer_needs_an_endpoint() -> None:
    with pytest.raises(ConfigurationError):
        Balancer([])
    balancer = Balancer([A])
    with pytest.raises(ConfigurationError):
        balancer.update([], 0.0)
    assert [e.address for e in balancer.endpoints] == [A]


def test_duplicates_collapse_and_one_endpoint_is_always_picked() -> None:
    balancer = Balancer([A, A])
    assert len(balancer.endpoints) == 1
    assert balancer.pick(0.0, exclude=balancer.endpoints) is balancer.endpoints[0]


# ---------------------------------------------------------------- power of two choices


def test_of_two_the_cheaper_wins() -> None:
    balancer = Balancer([A, B], rng=random.Random(1))
    endpoints = by_address(balancer)
    endpoints[A].stats.finish(0.050, True, 0.0)
    endpoints[B].stats.finish(0.005, True, 0.0)
    assert {balancer.pick(0.0).address for _ in range(50)} == {B}


def test_outstanding_requests_shift_the_choice() -> None:
    balancer = Balancer([A, B], rng=random.Random(1))
    endpoints = by_address(balancer)
    endpoints[A].stats.finish(0.010, True, 0.0)
    endpoints[B].stats.finish(0.010, True, 0.0)
    endpoints[A].stats.start(0.0)
    assert balancer.pick(0.0).address == B


def test_the_same_seed_picks_the_same_way() -> None:
    def picks(seed: int) -> list[str]:
        balancer = Balancer([A, B, C], rng=random.Random(seed))
        return [balancer.pick(0.0).address for _ in range(30)]

    assert picks(5) == picks(5)


def simulate_open_loop(
    balancer: Balancer, latency: dict[str, float], rng: random.Random
) -> Counter[str]:
    """Requests every 5 ms for 60 s of fake time; each takes its endpoint's latency ±1 ms."""
    picks: Counter[str] = Counter()
    running: list[tuple[float, int, Endpoint, float]] = []
    for i in range(12_000):
        now = i * 0.005
        while running and running[0][0] <= now:
            done, _, endpoint, took = heapq.heappop(running)
            endpoint.stats.finish(took, True, done)
        endpoint = balancer.pick(now)
        endpoint.stats.start(now)
        took = latency[endpoint.address] + rng.uniform(-0.001, 0.001)
        heapq.heappush(running, (now + took, i, endpoint, took))
        picks[endpoint.address] += 1
    return picks


def simulate_closed_loop(
    balancer: Balancer, latency: dict[str, float], rng: random.Random, *, concurrency: int
) -> Counter[str]:
    """``concurrency`` callers, each sending its next request as soon as one returns."""
    picks: Counter[str] = Counter()
    running: list[tuple[float, int, Endpoint, float]] = []
    now = 0.0
    for i in range(12_000):
        if len(running) >= concurrency:
            now, _, done_endpoint, took = heapq.heappop(running)
            done_endpoint.stats.finish(took, True, now)
        endpoint = balancer.pick(now)
        endpoint.stats.start(now)
        took = latency[endpoint.address] + rng.uniform(-0.001, 0.001)
        heapq.heappush(running, (now + took, i, endpoint, took))
        picks[endpoint.address] += 1
    return picks


SLOW_REPLICA = {A: 0.005, B: 0.005, C: 0.055}


def test_a_replica_50ms_slower_gets_little_traffic_open_loop() -> None:
    balancer = Balancer([A, B, C], rng=random.Random(3))
    picks = simulate_open_loop(balancer, SLOW_REPLICA, random.Random(4))
    assert picks[C] < 0.10 * sum(picks.values())
    assert picks[A] > 0
    assert picks[B] > 0


def test_a_replica_50ms_slower_gets_little_traffic_closed_loop() -> None:
    balancer = Balancer([A, B, C], rng=random.Random(3))
    picks = simulate_closed_loop(balancer, SLOW_REPLICA, random.Random(4), concurrency=16)
    assert picks[C] < 0.10 * sum(picks.values())


def test_round_robin_shares_evenly_whatever_the_latency() -> None:
    balancer = Balancer([A, B, C], BalancerConfig(mode="round_robin"))
    picks = simulate_open_loop(balancer, SLOW_REPLICA, random.Random(4))
    assert picks == Counter({A: 4000, B: 4000, C: 4000})


# ---------------------------------------------------------------- exclusions and skipping


@pytest.mark.parametrize("mode", ["peak_ewma", "round_robin"])
def test_exclude_sends_a_hedge_elsewhere(mode: str) -> None:
    balancer = Balancer([A, B, C], BalancerConfig(mode=mode), rng=random.Random(2))  # type: ignore[arg-type]
    first = balancer.pick(0.0)
    for _ in range(100):
        assert balancer.pick(0.0, exclude={first}) is not first
    others = {balancer.pick(0.0, exclude=[first]).address for _ in range(100)}
    assert others == {A, B, C} - {first.address}


def test_excluding_everything_is_best_effort() -> None:
    balancer = Balancer([A, B, C], rng=random.Random(2))
    assert balancer.pick(0.0, exclude=balancer.endpoints) in balancer.endpoints


def test_open_breakers_are_skipped() -> None:
    breakers = {B: open_breaker(B), C: open_breaker(C)}

    def endpoint(address: str) -> Endpoint:
        return Endpoint(address, EndpointStats(), breakers.get(address))

    balancer = Balancer([A, B, C], rng=random.Random(2), new_endpoint=endpoint)
    assert {balancer.pick(1.0).address for _ in range(50)} == {A}
    assert breakers[B].rejected == 0  # asking does not count as a refusal


def test_a_hedge_stays_on_a_healthy_replica_rather_than_a_broken_one() -> None:
    breakers = {B: open_breaker(B)}
    balancer = Balancer(
        [A, B],
        rng=random.Random(2),
        new_endpoint=lambda a: Endpoint(a, EndpointStats(), breakers.get(a)),
    )
    a = by_address(balancer)[A]
    assert balancer.pick(1.0, exclude={a}) is a


def test_with_every_breaker_open_it_still_picks() -> None:
    balancer = Balancer(
        [A, B],
        rng=random.Random(2),
        new_endpoint=lambda a: Endpoint(a, EndpointStats(), open_breaker(a)),
    )
    assert {balancer.pick(1.0).address for _ in range(50)} == {A, B}


def test_ejected_endpoints_are_skipped() -> None:
    outliers = OutlierDetector([A, B, C])
    balancer = Balancer([A, B, C], rng=random.Random(2), outliers=outliers)
    for _ in range(5):
        outliers.record(B, False, 0.0)
    assert B not in {balancer.pick(1.0).address for _ in range(100)}
    assert B in {balancer.pick(31.0).address for _ in range(100)}  # back after 30 s


def test_round_robin_cycles_and_skips_the_unusable() -> None:
    outliers = OutlierDetector([A, B, C])
    balancer = Balancer([A, B, C], BalancerConfig(mode="round_robin"), outliers=outliers)
    assert [balancer.pick(0.0).address for _ in range(6)] == [A, B, C, A, B, C]
    for _ in range(5):
        outliers.record(B, False, 0.0)
    assert [balancer.pick(0.0).address for _ in range(4)] == [A, C, A, C]


# ---------------------------------------------------------------- re-resolution


def test_update_keeps_known_endpoints_and_their_state() -> None:
    outliers = OutlierDetector([A, B])
    balancer = Balancer([A, B], outliers=outliers)
    a = by_address(balancer)[A]
    a.stats.finish(0.020, True, 0.0)
    balancer.update([C, A], 1.0)
    assert [e.address for e in balancer.endpoints] == [C, A]
    assert by_address(balancer)[A] is a
    assert by_address(balancer)[C].stats.latency(1.0) is None
    for _ in range(5):
        outliers.record(C, False, 1.0)
    assert outliers.is_ejected(C, 1.0)  # the detector knows the new member


def test_default_endpoints_use_the_configured_decay_time() -> None:
    balancer = Balancer([A], BalancerConfig(decay_time=2.0))
    assert balancer.endpoints[0].stats.decay_time == 2.0
