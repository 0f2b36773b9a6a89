"""Retry budget: the Finagle/Linkerd formula over a sliding window, on a fake clock."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microcall.errors import ConfigurationError
from microcall.policy.budget import WINDOW_BUCKETS, RetryBudget, RetryBudgetConfig
from microcall.testing import FakeClock


def only_percent(percent: float = 0.2, ttl: float = 10.0) -> RetryBudget:
    return RetryBudget(
        RetryBudgetConfig(percent_can_retry=percent, min_retries_per_second=0, ttl=ttl)
    )


def test_defaults_are_finagle_and_linkerd() -> None:
    config = RetryBudgetConfig()
    assert (config.percent_can_retry, config.min_retries_per_second, config.ttl) == (
        0.2,
        10.0,
        10.0,
    )
    assert config.reserve == 100.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"percent_can_retry": -0.1},
        {"percent_can_retry": math.nan},
        {"percent_can_retry": math.inf},
        {"percent_can_retry": True},
        {"min_retries_per_second": -1},
        {"min_retries_per_second": math.inf},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": math.nan},
    ],
)
def test_bad_config_is_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryBudgetConfig(**kwargs)  # type: ignore[arg-type]


def test_ttl_accepts_a_timedelta() -> None:
    assert RetryBudgetConfig(ttl=timedelta(seconds=30)).ttl == 30.0  # type: ignore[arg-type]


def test_reserve_is_available_before_any_deposit() -> None:
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.2, min_retries_per_second=1))
    granted = [budget.try_withdraw(0.0) for _ in range(12)]
    assert granted == [True] * 10 + [False] * 2
    assert (budget.withdrawn, budget.refused, budget.deposited) == (10, 2, 0)


def test_percent_of_deposits_can_retry() -> None:
    budget = only_percent(0.2)
    for _ in range(100):
        budget.deposit(0.0)
    granted = sum(budget.try_withdraw(0.0) for _ in range(30))
    assert granted == 20
    assert budget.refused == 10
    assert budget.balance(0.0) == pytest.approx(0.0)


def test_no_deposits_and_no_reserve_means_no_retries() -> None:
    budget = only_percent(0.2)
    assert not budget.try_withdraw(0.0)
    assert budget.refused == 1


def test_deposits_age_out_of_the_window() -> None:
    clock = FakeClock(start=1000.0)
    budget = only_percent(0.2)
    for _ in range(50):
        budget.deposit(clock.now())
    assert budget.balance(clock.now()) == pytest.approx(10.0)
    clock.advance(9.0)  # still inside the 10 s window
    assert budget.balance(clock.now()) == pytest.approx(10.0)
    clock.advance(1.0)  # the bucket of the deposits has been passed
    assert budget.balance(clock.now()) == pytest.approx(0.0)
    assert not budget.try_withdraw(clock.now())


def test_withdrawals_are_paid_back_before_the_budget_refills() -> None:
    clock = FakeClock(start=1000.0)
    budget = only_percent(0.2)
    for _ in range(100):
        budget.deposit(clock.now())
    clock.advance(9.5)
    assert sum(budget.try_withdraw(clock.now()) for _ in range(20)) == 20
    clock.advance(0.5)  # the deposits expire; the withdrawals made at 9.5 s remain
    assert budget.balance(clock.now()) == pytest.approx(-20.0)
    for _ in range(100):
        budget.deposit(clock.now())
    assert not budget.try_withdraw(clock.now())  # the new deposits pay the debt first
    clock.advance(9.5)  # the debt has aged out, the new deposits not yet
    assert budget.balance(clock.now()) == pytest.approx(20.0)
    assert budget.try_withdraw(clock.now())


def test_reserve_refills_after_the_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0, min_retries_per_second=1))
    assert sum(budget.try_withdraw(clock.now()) for _ in range(15)) == 10
    clock.advance(5.0)
    assert not budget.try_withdraw(clock.now())
    clock.advance(5.0)
    assert sum(budget.try_withdraw(clock.now()) for _ in range(15)) == 10


def test_a_long_silence_empties_the_window() -> None:
    budget = only_percent(0.5)
    for _ in range(10):
        budget.deposit(0.0)
    assert budget.balance(0.0) == pytest.approx(5.0)
    assert budget.balance(1_000_000.0) == pytest.approx(0.0)


def test_a_time_from_the_past_counts_as_the_latest() -> None:
    budget = only_percent(1.0)
    budget.deposit(100.0)
    budget.deposit(50.0)  # earlier than already seen: counted at 100 s
    assert budget.balance(100.0) == pytest.approx(2.0)
    assert budget.balance(110.5) == pytest.approx(0.0)


def simulate_failing_backend(
    budget: RetryBudget, *, calls: int, duration: float, attempts: int
) -> float:
    """Every attempt fails; each call retries while its policy and the budget allow.

    Returns attempts sent per logical call.
    """
    sent = 0
    spacing = duration / calls
    for i in range(calls):
        now = 1000.0 + i * spacing
        budget.deposit(now)
        sent += 1
        for retry in range(1, attempts):
            # retries follow quickly, as a short backoff would send them
            if not budget.try_withdraw(now + 0.001 * retry):
                break
            sent += 1
    return sent / calls


def test_every_call_failing_stays_near_one_point_two_attempts_per_call() -> None:
    budget = RetryBudget()  # defaults: 20% + 10/s over 10 s
    calls, duration = 10_000, 100.0
    per_call = simulate_failing_backend(budget, calls=calls, duration=duration, attempts=3)
    # The 10 retries/s floor adds min_retries_per_second / call rate on top of
    # the 20% (0.1 at 100 calls/s), plus one window's reserve at the start.
    reserve_share = 10 * (duration + budget.config.ttl) / calls
    assert per_call <= 1.2 + reserve_share + 1e-9
    assert per_call > 1.2  # the budget is actually used, not just refusing
    assert budget.refused > 0


def test_without_the_floor_it_is_one_point_two() -> None:
    budget = only_percent(0.2)
    per_call = simulate_failing_backend(budget, calls=10_000, duration=100.0, attempts=3)
    assert 1.19 <= per_call <= 1.2 + 1e-9


# ---------------------------------------------------------------- properties

operations = st.lists(
    st.tuples(st.sampled_from(["deposit", "withdraw"]), st.floats(0.0, 3.0)),
    max_size=300,
)
configs = st.builds(
    RetryBudgetConfig,
    percent_can_retry=st.floats(0.0, 2.0),
    min_retries_per_second=st.floats(0.0, 5.0),
    ttl=st.floats(0.5, 30.0),
)


@settings(max_examples=200, deadline=None)
@given(config=configs, ops=operations)
def test_grants_exactly_what_the_formula_allows(
    config: RetryBudgetConfig, ops: list[tuple[str, float]]
) -> None:
    """A plain list of timestamped events, windowed by bucket, decides like the budget."""
    budget = RetryBudget(config)
    width = config.ttl / WINDOW_BUCKETS
    events: list[tuple[int, str]] = []
    now = 500.0
    for kind, step in ops:
        now += step
        epoch = math.floor(now / width)
        live = [k for e, k in events if e > epoch - WINDOW_BUCKETS]
        if kind == "deposit":
            budget.deposit(now)
            events.append((epoch, kind))
            continue
        allowance = config.percent_can_retry * live.count("deposit") + config.reserve
        expected = live.count("withdraw") + 1 <= allowance + 1e-9
        assert budget.try_withdraw(now) is expected
        if expected:
            events.append((epoch, kind))


@settings(max_examples=200, deadline=None)
@given(config=configs, ops=operations)
def test_never_more_than_percent_plus_reserve_per_window(
    config: RetryBudgetConfig, ops: list[tuple[str, float]]
) -> None:
    budget = RetryBudget(config)
    start = now = 500.0
    for kind, step in ops:
        now += step
        if kind == "deposit":
            budget.deposit(now)
        else:
            budget.try_withdraw(now)
    windows = (now - start) / config.ttl + 2  # bucket alignment at both ends
    bound = config.percent_can_retry * budget.deposited + config.reserve * windows
    assert budget.withdrawn <= bound + 1e-6
    assert budget.withdrawn + budget.refused == sum(kind == "withdraw" for kind, _ in ops)


def test_deposits_and_withdrawals_from_many_threads_are_all_counted() -> None:
    # A blocking Client's direct calls deposit from their callers' threads
    # while its loop withdraws: no operation may be lost to another's.
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.5, min_retries_per_second=0))
    rounds = 5_000

    def work() -> None:
        for _ in range(rounds):
            budget.deposit(now=0.0)
            budget.try_withdraw(now=0.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.deposited == 4 * rounds
    assert budget.withdrawn + budget.refused == 4 * rounds
    assert budget.balance(now=0.0) == pytest.approx(0.5 * budget.deposited - budget.withdrawn)
