"""What a channel wrapper's calls share: options, targets, retry budget, learned delays, observers.

Both channel wrappers (grpc.aio and blocking) hold one :class:`ChannelCore`;
it answers the questions every call asks before its first attempt (its
deadline, its priority, its plan) and owns the state that lives longer than
one call. It never blocks and never awaits.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

import grpc

from microcall._attempt import AttemptKind
from microcall._checks import checked_metadata
from microcall._clock import MONOTONIC
from microcall._durations import to_seconds
from microcall.context import current_deadline, current_priority
from microcall.errors import CallError
from microcall.grpc._errors import AttemptTimeout, DeadlineExceeded, GrpcStatusError
from microcall.grpc._observe import RpcAttempt, RpcMethod, RpcObserver
from microcall.grpc._options import ChannelOptions
from microcall.grpc._targets import Targets
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.hedge_delay import LearnedDelay, LearnedDelayConfig
from microcall.policy.strategy import Hedged, Plan, SingleAttempt, Strategy
from microcall.priority import Priority

PRIORITY_METADATA = "x-request-priority"

C = TypeVar("C")
Learner = tuple[LearnedDelay, RetryBudget]
MetadataPairs = tuple[tuple[str, str | bytes], ...]

_SINGLE = SingleAttempt()


class ChannelCore(Generic[C]):
    """Per-channel state and the decisions made once per call."""

    __slots__ = (
        "_learners",
        "_own",
        "_priority",
        "budget",
        "floor",
        "lock",
        "now",
        "observers",
        "options",
        "rng",
        "targets",
        "timeout",
    )

    def __init__(
        self,
        options: ChannelOptions,
        targets: Targets[C],
        observers: Sequence[RpcObserver],
        rng: random.Random | None = None,
        *,
        threaded: bool = False,
    ) -> None:
        self.options = options
        self.targets = targets
        self.observers = tuple(observers)
        # The process's clock read directly: one call less on every call.
        self.now = time.monotonic if options.clock is MONOTONIC else options.clock.now
        self.timeout = to_seconds(options.timeout, name="timeout")
        self.floor = to_seconds(options.deadline_floor, name="deadline_floor", allow_zero=True)
        self.rng = rng or random.Random()
        self.budget = None if options.budget is None else RetryBudget(options.budget)
        # None: calls carry no priority of their own, and the server applies its default.
        self._priority = (
            None if options.priority is None else Priority.parse(options.priority).value
        )
        self._learners: dict[LearnedDelayConfig, Learner] = {}
        # The policies are plain objects told one thing at a time. A grpc.aio
        # channel tells them from its one event loop; a blocking channel's
        # calls come from many threads, which take turns through this lock
        # (held for a decision, never across I/O).
        self.lock: AbstractContextManager[object] = (
            threading.Lock() if threaded else contextlib.nullcontext()
        )
        # The metadata of a call given none, per priority: built once.
        self._own: dict[str | None, MetadataPairs] = {
            level.value: ((PRIORITY_METADATA, level.value),) for level in Priority
        }
        self._own[None] = ()

    # ------------------------------------------------------------ per call

    def expires_at(self, timeout: float | None, now: float) -> float:
        """The call's deadline: its own ``timeout`` or the default, capped by the context's."""
        expires_at = now + (self.timeout if timeout is None else timeout)
        inherited = current_deadline()
        if inherited is not None and inherited.expires_at < expires_at:
            return inherited.expires_at
        return expires_at

    def priority(self, given: Priority | str | None) -> str | None:
        if given is not None:
            return Priority.parse(given).value
        inherited = current_priority()
        return self._priority if inherited is None else inherited.value

    def own_priority(self) -> str | None:
        """The priority of a call that was given none: the context's, or the channel's (if any)."""
        inherited = current_priority()
        return self._priority if inherited is None else inherited.value

    def own_metadata(self) -> MetadataPairs:
        """The metadata of a call that was given none."""
        return self._own[self.own_priority()]

    def metadata(
        self, priority: str | None, given: Iterable[tuple[str, str | bytes]] | None
    ) -> MetadataPairs:
        """The call's outgoing metadata: the caller's, then microcall's priority (if any).

        A call sends one priority. When microcall has one (``priority=``, the
        context's, the channel's), it replaces the caller's own entry, which
        would contradict it; when it has none, the caller's entry goes as
        given, and the server's trust rules decide whether to believe it.
        """
        ours = self._own[priority]
        if not given:
            return ours
        # Checked here, before any attempt: grpc would report bad metadata as an
        # INTERNAL status or a bare TypeError.
        pairs = checked_metadata(given)
        if priority is None:
            return pairs
        # The caller's own priority entry would contradict ours: drop it.
        kept = tuple(pair for pair in pairs if pair[0] != PRIORITY_METADATA)
        return kept + ours

    def plan(
        self, method: RpcMethod, strategy: Strategy, start: float, expires_at: float
    ) -> tuple[Plan, Learner | None]:
        """The call's plan (a single attempt for a method that is not idempotent)."""
        if not method.idempotent:
            strategy = _SINGLE
        if isinstance(strategy, Hedged) and strategy.learned is not None:
            learner = self._learner(strategy.learned)
            learner[1].deposit(start)
            delay = learner[0].delay(method.full_name, start)
            plan = strategy.plan(expires_at=expires_at, floor=self.floor, rng=self.rng, delay=delay)
            return plan, learner
        return strategy.plan(expires_at=expires_at, floor=self.floor, rng=self.rng), None

    def _learner(self, config: LearnedDelayConfig) -> Learner:
        learner = self._learners.get(config)
        if learner is None:
            # As for HTTP (Finagle's rule): hedges have a budget of their own,
            # max_extra_load of the calls, on top of the retry budget.
            hedge_budget = RetryBudget(
                RetryBudgetConfig(percent_can_retry=config.max_extra_load, min_retries_per_second=0)
            )
            learner = self._learners[config] = (LearnedDelay(config), hedge_budget)
        return learner

    def admit(self, kind: AttemptKind, learner: Learner | None, now: float) -> str | None:
        """None if an attempt of this kind may go; else why not (budgets refuse extras)."""
        if kind is AttemptKind.FIRST:
            return None
        if kind is AttemptKind.HEDGE and learner is not None and not learner[1].try_withdraw(now):
            return "hedge budget empty"
        if self.budget is not None and not self.budget.try_withdraw(now):
            return "retry budget empty"
        return None

    def too_late(
        self, method: RpcMethod, remaining: float, attempts: Sequence[RpcAttempt]
    ) -> DeadlineExceeded:
        left_ms = max(remaining, 0.0) * 1000
        return DeadlineExceeded(
            f"deadline exceeded calling {method.full_name}: {left_ms:.1f} ms left, below the "
            f"{self.floor * 1000:.0f} ms needed to start an attempt",
            attempts=attempts,
        )


def status_error(
    method: RpcMethod,
    target: str,
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: MetadataPairs,
    *,
    by_deadline: bool,
    attempts: Sequence[RpcAttempt],
) -> CallError:
    """The one place a gRPC status becomes microcall's error."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        if by_deadline:
            return DeadlineExceeded(
                f"deadline exceeded calling {method.full_name} on {target}", attempts=attempts
            )
        return AttemptTimeout(
            f"attempt timed out calling {method.full_name} on {target}", attempts=attempts
        )
    return GrpcStatusError(
        f"{method.full_name} on {target} ended with {code.name}: {details}",
        code=code,
        details=details,
        trailing_metadata=trailing_metadata,
        attempts=attempts,
    )


def status_of(
    error: grpc.RpcError,
) -> tuple[grpc.StatusCode, str, MetadataPairs]:
    """The status of a failed blocking call (grpcio's errors are also its Call)."""
    # Typed as a plain RpcError; at run time it is the call's object.
    call: Any = error
    if callable(getattr(call, "code", None)):
        return call.code(), call.details() or "", tuple(call.trailing_metadata() or ())
    return grpc.StatusCode.UNKNOWN, str(error), ()
