"""Retry budget: retries and hedges together may add only a fraction of the traffic.

Theory of operation. Every logical call *deposits* one token; every retry or
hedge must *withdraw* one before it is sent. Over a sliding window of ``ttl``
seconds, withdrawals are allowed while::

    withdrawals_in_window + 1 <= percent_can_retry * deposits_in_window
                                 + min_retries_per_second * ttl

so retries add at most ``percent_can_retry`` of the calls, plus a small
constant allowance that lets a client with little traffic still retry at all.
These are the semantics and the defaults of Finagle's and Linkerd's retry
budgets (20% of requests plus 10 retries per second over 10 seconds). When
every call fails, a three-attempt retry policy asking this budget sends about
``1 + percent_can_retry`` attempts per call instead of three, plus
``min_retries_per_second`` divided by the call rate: a retry storm cannot
multiply an outage.

The window is a ring of ten buckets of ``ttl / 10`` seconds each. A deposit or
withdrawal is counted in the bucket of its ``now``; a bucket is emptied when
the ring moves past it, so the window spans between nine and ten buckets'
worth of time. Withdrawals age out with the deposits of their window, so a
burst of retries is paid back before the budget refills. Running totals keep
every operation O(1) (amortised over the buckets the ring skips).

Interface for the engine (one budget per client or per endpoint group, shared
by its calls: on the client's event loop, and in the threads of a blocking
Client's direct calls, so each operation holds a lock; a forked child gets
every budget's lock back unlocked, in case another thread held it)::

    budget.deposit(now)               # once per logical call
    if budget.try_withdraw(now): ...  # before each retry or hedge; False: do not send

A refusal is visible twice: ``try_withdraw`` returns False and the
``refused`` counter grows (``deposited`` and ``withdrawn`` count the rest).
``now`` is monotonic seconds from the client's clock; a ``now`` earlier than
one already seen is treated as the latest one seen.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

from microcall._durations import to_seconds
from microcall._validate import number
from microcall.policy._window import SlidingCount

# Finagle's and Linkerd's defaults (com.twitter.finagle.service.RetryBudget,
# Linkerd's retryBudget): 20% extra load, 10 retries/s floor, 10 s window.
DEFAULT_PERCENT_CAN_RETRY = 0.2
DEFAULT_MIN_RETRIES_PER_SECOND = 10.0
DEFAULT_TTL = 10.0

# Ten buckets make the window's edge at most a tenth of ttl coarse, which is
# far below the noise in any retry rate, for a few hundred bytes of state.
WINDOW_BUCKETS = 10

# Float sums of fractions like 0.2 * n can land one ulp below an integer the
# formula reaches exactly; this keeps the bound from refusing that last retry.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetConfig:
    """How much extra traffic retries and hedges may add.

    >>> RetryBudgetConfig(percent_can_retry=0.1, min_retries_per_second=5)
    RetryBudgetConfig(percent_can_retry=0.1, min_retries_per_second=5.0, ttl=10.0)
    """

    percent_can_retry: float = DEFAULT_PERCENT_CAN_RETRY
    min_retries_per_second: float = DEFAULT_MIN_RETRIES_PER_SECOND
    ttl: float = DEFAULT_TTL

    def __post_init__(self) -> None:
        percent = number(
            "percent_can_retry",
            self.percent_can_retry,
            minimum=0,
            what="a finite fraction (0.2 = 20%)",
        )
        minimum = number("min_retries_per_second", self.min_retries_per_second, minimum=0)
        object.__setattr__(self, "percent_can_retry", percent)
        object.__setattr__(self, "min_retries_per_second", float(minimum))
        object.__setattr__(self, "ttl", to_seconds(self.ttl, name="retry budget ttl"))

    @property
    def reserve(self) -> float:
        """Retries allowed in any window regardless of traffic: ``min_retries_per_second * ttl``."""
        return self.min_retries_per_second * self.ttl


class RetryBudget:
    """The running budget: deposits per logical call, withdrawals per retry or hedge.

    >>> budget = RetryBudget(RetryBudgetConfig(min_retries_per_second=0))
    >>> for _ in range(10):
    ...     budget.deposit(now=0.0)
    >>> [budget.try_withdraw(now=0.0) for _ in range(3)]
    [True, True, False]
    >>> budget.refused
    1
    """

    __slots__ = (
        "__weakref__",
        "_deposits",
        "_lock",
        "_withdrawals",
        "config",
        "deposited",
        "refused",
        "withdrawn",
    )

    def __init__(self, config: RetryBudgetConfig | None = None) -> None:
        self.config = config or RetryBudgetConfig()
        self._deposits = SlidingCount(self.config.ttl, WINDOW_BUCKETS)
        self._withdrawals = SlidingCount(self.config.ttl, WINDOW_BUCKETS)
        self.deposited = 0
        """Deposits ever made (logical calls)."""
        self.withdrawn = 0
        """Withdrawals ever granted (retries and hedges sent)."""
        self.refused = 0
        """Withdrawals ever refused (retries and hedges not sent)."""
        # A plain lock, taken in C (``ForkSafeLock``'s Python-level ``with``
        # would cost twice as much on every call): renewed after fork instead.
        self._lock = threading.Lock()
        _BUDGETS.add(self)

    def deposit(self, now: float) -> None:
        """Count one logical call; call once per call, before its first attempt."""
        with self._lock:
            self._deposits.add(now)
            self.deposited += 1

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget: True if it may be sent, False if refused."""
        with self._lock:
            if self._withdrawals.total(now) + 1 > self._allowance(now) + _EPSILON:
                self.refused += 1
                return False
            self._withdrawals.add(now)
            self.withdrawn += 1
            return True

    def balance(self, now: float) -> float:
        """Retries that could be sent right now (fractional; negative while paying back)."""
        with self._lock:
            return self._allowance(now) - self._withdrawals.total(now)

    def _allowance(self, now: float) -> float:
        config = self.config
        return config.percent_can_retry * self._deposits.total(now) + config.reserve


# Every budget, for their locks' renewal in a forked child.
_BUDGETS: weakref.WeakSet[RetryBudget] = weakref.WeakSet()


def _renew_locks() -> None:
    for budget in list(_BUDGETS):
        budget._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_locks)
