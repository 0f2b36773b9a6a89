"""The decisions every call of one client or channel shares, free of I/O: for HTTP and gRPC.

A logical call becomes attempts the same way whatever carries it. Before the
first attempt: the call deposits into the retry budget and gets its plan
from its strategy (a single attempt when it is not replayable; for a
learned hedge, with the route's current delay, and with the hedge budget of
that learned config). For each Send the plan decides: an extra attempt (a
retry or a hedge) must be admitted by the budgets, or it is refused and the
plan is told so. When an attempt ends, the learned delay hears its latency
(successes and timeouts: leaving the slow tail out would let the delay
drift down and hedging feed on itself).

:class:`CallPolicies` holds that state, which lives longer than one call
(one per HTTP engine, one per gRPC channel), and answers those questions.
The per-call state machine that asks them is :mod:`microcall._driver`'s
``CallDriver``. Neither sleeps, reads the wall clock (``now`` is passed in)
or imports asyncio or threads: the runners (``_engine.py`` for HTTP, the
channels in ``grpc/``) perform what they decide with their own I/O, and
tests/test_call_driver.py drives both with a fake clock.
"""

from __future__ import annotations

import random

from microcall._attempt import AttemptKind, RefusalReason
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.hedge_delay import LearnedDelay, LearnedDelayConfig
from microcall.policy.strategy import Hedged, Plan, SingleAttempt, Strategy

Learner = tuple[LearnedDelay, RetryBudget]
"""A learned hedge delay and the hedge budget that goes with it."""

_SINGLE = SingleAttempt()


class CallPolicies:
    """The decisions every call of one client or channel shares: plans, learners, budgets."""

    __slots__ = ("_learners", "budget", "floor", "rng")

    def __init__(
        self, *, budget: RetryBudget | None, floor: float, rng: random.Random | None = None
    ) -> None:
        self.budget = budget
        self.floor = floor
        self.rng = rng or random.Random()
        # Learned hedge delays and their own budgets, one per learned config in use.
        self._learners: dict[LearnedDelayConfig, Learner] = {}

    def plan(
        self,
        strategy: Strategy,
        *,
        replayable: bool,
        route: str,
        start: float,
        expires_at: float,
    ) -> tuple[Plan, Learner | None]:
        """The call's plan, and the learner its hedges draw on (if its delay is learned).

        A call that may not be sent twice gets a single attempt whatever the strategy.
        """
        if not replayable:
            strategy = _SINGLE
        if isinstance(strategy, Hedged) and strategy.learned is not None:
            learner = self.learner(strategy.learned)
            learner[1].deposit(start)
            delay = learner[0].delay(route, start)
            plan = strategy.plan(expires_at=expires_at, floor=self.floor, rng=self.rng, delay=delay)
            return plan, learner
        return strategy.plan(expires_at=expires_at, floor=self.floor, rng=self.rng), None

    def learner(self, config: LearnedDelayConfig) -> Learner:
        """The learned delay for ``config``, made on first use."""
        learner = self._learners.get(config)
        if learner is None:
            # Finagle's rule: hedges have a budget of their own, max_extra_load of
            # the calls, on top of the client's retry budget.
            hedge_budget = RetryBudget(
                RetryBudgetConfig(percent_can_retry=config.max_extra_load, min_retries_per_second=0)
            )
            learner = self._learners[config] = (LearnedDelay(config), hedge_budget)
        return learner

    def admit(self, kind: AttemptKind, learner: Learner | None, now: float) -> RefusalReason | None:
        """None if an attempt of this kind may go; else why not (budgets refuse extras)."""
        if kind is AttemptKind.FIRST:
            return None
        if kind is AttemptKind.HEDGE and learner is not None and not learner[1].try_withdraw(now):
            return RefusalReason.HEDGE_BUDGET
        if self.budget is not None and not self.budget.try_withdraw(now):
            return RefusalReason.RETRY_BUDGET
        return None
