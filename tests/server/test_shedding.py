"""The priority limiter: who is refused first, and what it tells the limit (fake clock)."""

from __future__ import annotations

import threading

import pytest

from microcall.errors import ConfigurationError, UsageError
from microcall.priority import Priority
from microcall.server import (
    AIMDLimit,
    Permit,
    PriorityLimiter,
    PriorityShares,
    Shedding,
    StaticLimit,
)
from microcall.testing import FakeClock

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW


def limiter(limit: int, clock: FakeClock | None = None, **shares: float) -> PriorityLimiter:
    shedding = Shedding(limit=StaticLimit(limit=limit), shares=PriorityShares(**shares))
    return shedding.new_limiter(clock or FakeClock())


def fill(limiter: PriorityLimiter, priority: Priority) -> list[Permit]:
    permits = []
    while (permit := limiter.try_acquire(priority)) is not None:
        permits.append(permit)
    return permits


def test_each_priority_fills_only_its_share() -> None:
    shed = limiter(10)
    assert len(fill(shed, LOW)) == 5
    assert len(fill(shed, NORMAL)) == 3  # up to 8 in flight
    assert len(fill(shed, HIGH)) == 2  # up to 10
    assert shed.inflight == 10


def test_low_is_refused_first_then_normal_then_high() -> None:
    shed = limiter(10)
    held = fill(shed, HIGH)
    assert len(held) == 10
    for permit in held[:5]:  # five finish: 5 in flight
        permit.release()
    assert shed.try_acquire(LOW) is None  # 5 >= 50% of 10
    assert shed.try_acquire(NORMAL) is not None  # 6
    assert shed.try_acquire(NORMAL) is not None  # 7
    assert shed.try_acquire(NORMAL) is not None  # 8
    assert shed.try_acquire(NORMAL) is None
    assert shed.try_acquire(HIGH) is not None  # 9
    assert shed.try_acquire(HIGH) is not None  # 10
    assert shed.try_acquire(HIGH) is None


def test_an_idle_server_admits_every_priority_even_with_a_tiny_limit() -> None:
    shed = limiter(1, low=0.1, normal=0.2)
    permit = shed.try_acquire(LOW)
    assert permit is not None
    assert shed.try_acquire(HIGH) is None
    permit.release()
    assert shed.try_acquire(NORMAL) is not None


class Probing:
    """A limit of 10 that says it is probing."""

    limit = 10
    probing = True

    def on_sample(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        pass


def test_while_a_limit_probes_only_high_keeps_its_whole_share() -> None:
    shed = PriorityLimiter(Probing(), shares=PriorityShares())
    assert [shed.capacity(p) for p in (LOW, NORMAL, HIGH)] == [2, 4, 10]
    assert len(fill(shed, NORMAL)) == 4
    assert len(fill(shed, HIGH)) == 6


def test_permits_report_round_trips_on_the_injected_clock() -> None:
    clock = FakeClock()
    shed = Shedding(limit=AIMDLimit(initial=10, latency_target=0.1)).new_limiter(clock)
    permits = [shed.try_acquire(HIGH) for _ in range(10)]
    assert [p.inflight for p in permits if p] == list(range(1, 11))
    clock.advance(0.5)  # every one of them took 500 ms: over the target
    for permit in permits:
        assert permit is not None
        permit.release()
    assert shed.limit == 9  # one cut for the whole burst
    assert shed.inflight == 0


def test_discarded_permits_free_the_slot_without_a_sample() -> None:
    clock = FakeClock()
    shed = Shedding(limit=AIMDLimit(initial=4, latency_target=0.1)).new_limiter(clock)
    permit = shed.try_acquire(NORMAL)
    assert permit is not None
    clock.advance(10.0)
    permit.discard()
    assert shed.limit == 4
    assert shed.inflight == 0


def test_a_permit_is_released_once() -> None:
    shed = limiter(2)
    permit = shed.try_acquire(HIGH)
    assert permit is not None
    permit.release()
    with pytest.raises(UsageError):
        permit.release()
    assert shed.inflight == 0


def test_concurrent_threads_never_exceed_the_limit() -> None:
    shed = limiter(8)
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal peak
        for _ in range(2000):
            permit = shed.try_acquire(HIGH)
            if permit is None:
                continue
            with lock:
                peak = max(peak, shed.inflight)
            permit.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shed.inflight == 0
    assert 1 <= peak <= 8


@pytest.mark.parametrize(
    "shares", [{"low": 0.0}, {"low": 1.5}, {"low": 0.9, "normal": 0.5}, {"normal": -1.0}]
)
def test_shares_are_validated(shares: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        PriorityShares(**shares)


@pytest.mark.parametrize("retry_after", [0, -1, 1.5, True])
def test_shedding_is_validated(retry_after: object) -> None:
    with pytest.raises(ConfigurationError):
        Shedding(limit=StaticLimit(limit=1), retry_after=retry_after)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Shedding(limit=10)  # type: ignore[arg-type]
