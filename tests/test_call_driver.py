"""The call driver's shared decisions, driven by hand with a fake clock: no event loop."""

from __future__ import annotations

import random

from microcall._attempt import AttemptKind, RefusalReason
from microcall._call import CallPolicies
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.classify import Verdict
from microcall.policy.strategy import Finish, Send, Wait, hedged, retry
from microcall.testing import FakeClock


def _policies(budget: RetryBudget | None = None) -> CallPolicies:
    return CallPolicies(budget=budget, floor=0.005, rng=random.Random(7))


def test_a_call_that_may_not_be_replayed_gets_one_attempt_whatever_the_strategy() -> None:
    clock = FakeClock()
    now = clock.now()
    plan, learner = _policies().plan(
        retry(3), replayable=False, route="/a", start=now, expires_at=now + 1.0
    )
    assert learner is None
    assert plan.decide(now) == Send(AttemptKind.FIRST)
    plan.finished(0, Verdict.RETRY, now, None)
    assert plan.decide(now) == Finish(0)


def test_a_retry_is_refused_when_the_budget_is_empty_and_the_plan_finishes() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0))
    policies = _policies(budget)
    now = clock.now()
    budget.deposit(now)
    plan, learner = policies.plan(
        retry(3), replayable=True, route="/a", start=now, expires_at=now + 1.0
    )
    action = plan.decide(now)
    assert action == Send(AttemptKind.FIRST)
    assert policies.admit(AttemptKind.FIRST, learner, now) is None
    plan.finished(0, Verdict.RETRY, now, None)
    action = plan.decide(now)
    assert isinstance(action, Wait)
    assert action.until is not None
    clock.advance(action.until - now)
    now = clock.now()
    action = plan.decide(now)
    assert isinstance(action, Send)
    assert action.kind is AttemptKind.RETRY
    refusal = policies.admit(action.kind, learner, now)
    assert refusal is RefusalReason.RETRY_BUDGET
    assert refusal == "retry budget empty"  # what records have always shown
    plan.refused()
    assert plan.decide(now) == Finish(0)


def test_a_learned_hedge_waits_the_learned_delay_then_draws_on_its_own_budget() -> None:
    clock = FakeClock()
    policies = _policies()
    strategy = hedged(max_extra_load=0.5, attempts=2)
    now = clock.now()
    plan, learner = policies.plan(
        strategy, replayable=True, route="/books", start=now, expires_at=now + 5.0
    )
    assert learner is not None
    assert (
        policies.plan(strategy, replayable=True, route="/books", start=now, expires_at=now + 5.0)[1]
        is learner
    )  # one learner per config, shared by every call
    assert plan.decide(now) == Send(AttemptKind.FIRST)
    action = plan.decide(now)
    assert isinstance(action, Wait)
    assert action.until is not None
    assert action.until > now
    clock.advance(action.until - now)
    action = plan.decide(clock.now())
    assert action == Send(AttemptKind.HEDGE)
    # The hedge budget allows max_extra_load of the calls: two calls deposited.
    assert policies.admit(AttemptKind.HEDGE, learner, clock.now()) is None
    assert policies.admit(AttemptKind.HEDGE, learner, clock.now()) is RefusalReason.HEDGE_BUDGET
