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
from microcall.server.shedding import DEFAULT_RETRY_AFTER
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


def test_idle_capacity_is_lent_to_any_priority() -> None:
    # Low alone keeps the whole limit busy: nobody else wants the rest.
    shed = limiter(10)
    permits = fill(shed, LOW)
    assert len(permits) == 10
    assert [p.lent for p in permits] == [False] * 5 + [True] * 5  # beyond its half: borrowed
    assert shed.lent == 5
    normal = limiter(10)
    assert len(fill(normal, NORMAL)) == 10


def test_high_gets_in_over_borrowers_when_the_limit_is_full() -> None:
    shed = limiter(10)
    fill(shed, LOW)  # 5 inside low's guarantee, 5 borrowed
    assert len(fill(shed, HIGH)) == 10  # high's guarantee: the whole limit, over the borrowers
    assert shed.inflight == 20  # twice the limit: the bound on any overrun
    assert shed.try_acquire(NORMAL) is None
    assert shed.try_acquire(LOW) is None


def test_normal_is_guaranteed_its_share_with_high_and_high_the_rest() -> None:
    shed = limiter(10)
    fill(shed, LOW)
    assert len(fill(shed, NORMAL)) == 8  # normal and high together: 80%
    assert len(fill(shed, HIGH)) == 2  # then the bound of twice the limit
    only_high = limiter(10)
    fill(only_high, HIGH)
    assert only_high.try_acquire(NORMAL) is None  # high's own requests count for normal


def test_nobody_borrows_while_the_limit_is_full_so_the_overrun_drains() -> None:
    shed = limiter(10)
    low = fill(shed, LOW)
    fill(shed, HIGH)
    for permit in low:  # low's requests finish...
        permit.release()
        assert shed.try_acquire(LOW) is None  # ...and nobody borrows: still full
    assert shed.inflight == 10
    assert shed.lent == 0


def test_the_lowest_priority_is_refused_first_under_overload() -> None:
    clock = FakeClock()
    shed = limiter(10, clock)
    held = fill(shed, HIGH)  # ten, and an eleventh refused: high wants more than it holds
    assert len(held) == 10
    assert shed.try_acquire(LOW) is None
    assert shed.try_acquire(NORMAL) is None
    for permit in held[:5]:  # five finish: 5 in flight, room again...
        permit.release()
    # ...kept for high, refused a moment ago: nobody borrows it.
    assert shed.try_acquire(LOW) is None
    assert len(fill(shed, NORMAL)) == 3  # normal's guarantee stands: 80% with high
    clock.advance(DEFAULT_RETRY_AFTER)  # nobody more important refused since
    assert len(fill(shed, LOW)) == 2  # borrowed, up to the limit
    assert len(fill(shed, HIGH)) == 5  # its whole guarantee, over the borrowers
    assert shed.inflight == 15


def test_low_yields_to_a_refused_normal_and_normal_to_a_refused_high() -> None:
    clock = FakeClock()
    shed = limiter(10, clock)
    normal = fill(shed, NORMAL)  # 8 guaranteed, 2 borrowed, then one refused
    assert len(normal) == 10
    clock.advance(0.5)
    normal[0].release()
    normal[1].release()
    assert shed.try_acquire(LOW) is None  # normal was refused within the window
    assert shed.try_acquire(NORMAL) is not None  # the freed slot goes to normal
    clock.advance(DEFAULT_RETRY_AFTER)
    assert shed.try_acquire(LOW) is not None  # no normal refused since: low borrows again

    shed = limiter(10, clock)
    high = fill(shed, HIGH)
    high[0].release()
    assert shed.try_acquire(NORMAL) is None  # high was refused within the window
    assert shed.try_acquire(LOW) is None
    clock.advance(DEFAULT_RETRY_AFTER)
    assert shed.try_acquire(NORMAL) is not None


def test_lower_priorities_yield_for_the_retry_after_the_refusal_sent() -> None:
    clock = FakeClock()
    shedding = Shedding(limit=StaticLimit(limit=10), retry_after=3)
    shed = shedding.new_limiter(clock)
    high = fill(shed, HIGH)
    high[0].release()
    clock.advance(2.9)  # the refused callers were told to come back after 3 s
    assert shed.try_acquire(LOW) is None
    clock.advance(0.1)
    assert shed.try_acquire(LOW) is not None


def test_a_negative_yield_window_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="yield_window"):
        PriorityLimiter(StaticLimit(limit=10).start(), shares=PriorityShares(), yield_window=-1)


def test_a_refused_low_request_holds_back_nobody() -> None:
    shed = limiter(10)
    low = fill(shed, LOW)  # the limit, then one low refused
    low[0].release()
    again = shed.try_acquire(LOW)  # low does not yield to itself
    assert again is not None
    assert again.lent

    shed = limiter(10)
    normal = [shed.try_acquire(NORMAL) for _ in range(8)]  # normal's whole guarantee
    lows = fill(shed, LOW)  # two, then one refused at the limit
    assert len(lows) == 2
    lows[0].release()
    borrowed = shed.try_acquire(NORMAL)  # over its guarantee: it must borrow, and may
    assert borrowed is not None
    assert borrowed.lent
    assert all(permit is not None for permit in normal)


def test_an_idle_server_admits_every_priority_even_with_a_tiny_limit() -> None:
    shed = limiter(1, low=0.1, normal=0.2)
    permit = shed.try_acquire(LOW)
    assert permit is not None
    assert not permit.lent  # one slot: the guarantee rounds up to it
    normal = shed.try_acquire(NORMAL)  # over the limit: low does not count against it
    assert normal is not None
    assert shed.try_acquire(HIGH) is None  # twice the limit
    permit.release()
    normal.release()
    assert shed.try_acquire(HIGH) is not None


class Probing:
    """A limit of 10 that says it is probing."""

    limit = 10
    probing = True

    def on_sample(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        pass


def test_while_a_limit_probes_low_and_normal_do_not_borrow() -> None:
    shed = PriorityLimiter(Probing(), shares=PriorityShares())
    assert [shed.capacity(p) for p in (LOW, NORMAL, HIGH)] == [2, 4, 10]
    assert len(fill(shed, LOW)) == 2
    assert len(fill(shed, NORMAL)) == 2  # 4 in flight in all
    assert len(fill(shed, HIGH)) == 10  # high keeps its guarantee: the limit
    assert shed.lent == 0


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


@pytest.mark.parametrize("mixed", [False, True])
def test_concurrent_threads_never_exceed_the_limit_or_twice_it(mixed: bool) -> None:
    shed = limiter(8)
    peak = 0
    lock = threading.Lock()

    def work(priority: Priority) -> None:
        nonlocal peak
        for _ in range(2000):
            permit = shed.try_acquire(priority)
            if permit is None:
                continue
            with lock:
                peak = max(peak, shed.inflight)
            permit.release()

    priorities = [LOW, NORMAL, HIGH] if mixed else [HIGH]
    threads = [
        threading.Thread(target=work, args=(priorities[i % len(priorities)],)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shed.inflight == shed.lent == 0
    # One priority alone never overruns; a mix may, onto lent slots only.
    assert 1 <= peak <= (16 if mixed else 8)


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
