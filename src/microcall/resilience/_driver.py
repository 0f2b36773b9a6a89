"""One call of a callable: the call driver, adapted to a function's outcomes.

Theory of operation. The decisions are :mod:`microcall._driver`'s, the same
as for HTTP and gRPC calls: when attempts start and when the call is over
(the strategy's plan), the budgets' admission of retries and hedges, each
attempt's time limit (what is left of the deadline, or the strategy's
``attempt_timeout`` when that is shorter), what the learned hedge delay
hears, and the record of attempts. A callable has one target, itself: the
call has no endpoint group, and every record names the callable. This module
adds what is a callable's own: :class:`CallableRules` (an outcome is judged
by the package's classifier, ``_classify``; an attempt that ran out of time
is a timeout; records are plain :class:`~microcall.Attempt`\\ s), the
deadline each attempt inherits, the observers' trace context, and the one
result or error of the call. It does no I/O and reads no clock: a runner
(``_async`` on an event loop, ``_sync`` on the caller's thread) loops::

    action = call.next(now)
    Start       -> run attempt ``index`` under ``deadline`` (the context it inherits)
    Wait(until) -> wait for an attempt to end, or until ``until`` (None: an outcome)
    Finish      -> stop what still runs (``call.abandon(i, now)``), then
                   ``call.result(now)``: the value, or the call's error raised

and reports each attempt's end with ``call.finished(index, outcome, now)``
(an async attempt that outran its own time: ``call.timed_out(index, now)``).

How a call ends:

* an answer (ACCEPT or STOP on a returned value) is returned; so is a value
  the classifier called retriable once attempts run out, as a 503 is;
* an exception that is not retriable (STOP) propagates as itself, at once;
* a retriable exception on the last attempt raises ``AttemptsExhausted``
  from it, or ``DeadlineExceeded`` from it when the deadline, not the
  strategy or the budget, stopped the next attempt;
* too little time to start at all, or an attempt cut off by the deadline,
  raises ``DeadlineExceeded`` (from the last exception an attempt raised, if any).

Threads. Blocking calls may come from many threads at once, and share one
:class:`~microcall.Resilience`'s budget and learned delays, plain objects
told one thing at a time: every step of the driver is taken under the
shared lock (the classifier included), never the callable nor the observers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from microcall._attempt import Attempt, AttemptKind
from microcall._call import CallPolicies
from microcall._call_watch import Watch, Watching
from microcall._clock import Clock
from microcall._driver import CallDriver, start_call
from microcall._driver import Start as AttemptStart
from microcall._fork_lock import ForkSafeLock
from microcall.context import inherit_deadline
from microcall.deadline import Deadline
from microcall.errors import AttemptsExhausted, AttemptTimeout, CallError, DeadlineExceeded
from microcall.observe.hooks import AttemptScope
from microcall.policy.balancer import Endpoint
from microcall.policy.classify import Verdict
from microcall.policy.strategy import Finish, Strategy, Wait
from microcall.resilience._classify import OutcomeClassifier, Raised, Returned
from microcall.resilience._observe import request_for

Sleep = Callable[[float], object]
"""``sleep(seconds)``: blocking, or returning an awaitable (which only async calls can await)."""


@dataclass(frozen=True, slots=True)
class TimedOut:
    """An attempt cut off by its own time limit (``AttemptTimeout``) or the deadline's."""

    error: CallError


Ended = Returned | Raised | TimedOut
"""How an attempt of a callable ended, as the driver hears it."""


class CallableRules:
    """What the call driver needs to know of callables (see :class:`microcall._driver.Rules`)."""

    __slots__ = ("_classify",)

    record_type = Attempt

    def __init__(self, classify: OutcomeClassifier) -> None:
        self._classify = classify

    def judge(self, outcome: Ended, attempt_limited: bool) -> tuple[Verdict, float | None]:
        if isinstance(outcome, TimedOut):
            # Cut off by attempt_timeout: always worth another attempt, which
            # is what the limit exists for (abandon a stuck attempt while the
            # deadline still leaves time for the next). By the deadline: over.
            return (Verdict.RETRY if attempt_limited else Verdict.STOP), None
        if isinstance(outcome, Returned):
            return self._classify(outcome.value, None), None
        return self._classify(None, outcome.error), None

    def timed_out(self, outcome: Ended) -> bool:
        return isinstance(outcome, TimedOut)

    def target(self, endpoint: Endpoint) -> str:
        # Never asked: a callable's call has no endpoint group.
        return endpoint.address

    @staticmethod
    def record(
        index: int,
        kind: AttemptKind,
        target: str,
        offset: float,
        duration: float,
        outcome: Ended,
    ) -> Attempt:
        # The exception's class name, never its message (it may carry credentials).
        error = None if isinstance(outcome, Returned) else type(outcome.error).__name__
        return Attempt(index, kind, target, offset, duration, error=error)


@dataclass(frozen=True, slots=True, kw_only=True)
class Shared:
    """What every call through one :class:`~microcall.Resilience` shares."""

    strategy: Strategy
    rules: CallableRules
    timeout: float
    floor: float
    clock: Clock
    policies: CallPolicies
    # None when there are no observers.
    observers: Watching | None
    # Sync calls may come from many threads at once; the budget and the
    # learned delays are written without locks of their own.
    lock: ForkSafeLock
    # The backoff sleep (None: asyncio.sleep for async calls, time.sleep for blocking ones).
    sleep: Sleep | None
    # Hedges that lost, lingering or being cancelled: the loop holds tasks weakly.
    lingering: set[asyncio.Task[Any]]


@dataclass(slots=True)
class Start:
    """Run attempt ``index``; it inherits ``deadline`` and may run for ``timeout`` seconds.

    ``headers`` holds what observers wrote for the attempt (a trace context).
    """

    index: int
    kind: AttemptKind
    timeout: float
    deadline: Deadline
    headers: dict[str, str]


class CallableCall:
    """One call of a callable: the driver's decisions, and the callable's way of ending."""

    __slots__ = (
        "_driver",
        "_scopes",
        "_shared",
        "_started",
        "_url",
        "expires_at",
        "name",
        "watch",
    )

    def __init__(self, shared: Shared, name: str, now: float) -> None:
        self._shared = shared
        self.name = name
        self.expires_at = inherit_deadline(now + shared.timeout)
        request = request_for(name)
        # Each attempt is shown the call's own URL, as an HTTP attempt to one endpoint is.
        self._url = request.url
        observers = shared.observers
        self.watch = observers.call(request) if observers is not None else None
        policies = shared.policies
        with shared.lock:
            if policies.budget is not None:
                policies.budget.deposit(now)
            self._driver: CallDriver[Ended] = start_call(
                policies,
                shared.rules,
                shared.strategy,
                replayable=True,
                route=name,
                start=now,
                expires_at=self.expires_at,
                group=None,
                target=name,
                refused_target=name,
            )
        self._started: dict[int, AttemptStart] = {}
        self._scopes: dict[int, list[AttemptScope]] = {}

    # ------------------------------------------------------------ decisions

    def next(self, now: float) -> Start | Wait | Finish:
        """The next thing to do: start an attempt, wait, or finish."""
        with self._shared.lock:
            action = self._driver.next(now)
        if not isinstance(action, AttemptStart):
            return action
        index = action.index
        self._started[index] = action
        headers: dict[str, str] = {}
        if type(self.watch) is Watch and self.watch.following:
            scopes = self.watch.attempt_started(index, action.kind, self._url, headers)
            if scopes:
                self._scopes[index] = scopes
        deadline = Deadline(now + action.timeout, clock=self._shared.clock)
        return Start(index, action.kind, action.timeout, deadline, headers)

    def finished(self, index: int, outcome: Returned | Raised, now: float) -> None:
        """Attempt ``index`` returned or raised."""
        self._ended(index, outcome, now)

    def timed_out(self, index: int, now: float) -> None:
        """Attempt ``index`` ran out of its own time (or the call's) and was cancelled."""
        error: CallError
        if self._started[index].by_deadline:
            error = DeadlineExceeded(
                f"deadline exceeded: {self.name} attempt #{index} was still running"
            )
        else:
            error = AttemptTimeout(f"{self.name}: attempt #{index} ran out of its own time")
        self._ended(index, TimedOut(error), now)

    def _ended(self, index: int, outcome: Ended, now: float) -> None:
        with self._shared.lock:
            record = self._driver.finished(index, outcome, now)
        scopes = self._scopes.pop(index, None)
        if scopes:
            Watch.attempt_ended(scopes, record)

    def abandon(self, index: int, now: float) -> None:
        """Attempt ``index`` lost the race (or the call was given up) and is being cancelled."""
        with self._shared.lock:
            record = self._driver.lost(index, now)
            # The caller never waits for a cancelled attempt: it is over for the call.
            self._driver.settled(index, None, now)
        scopes = self._scopes.pop(index, None)
        if scopes:
            Watch.attempt_ended(scopes, record)

    # ------------------------------------------------------------ the end

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self._driver.attempts

    def result(self, now: float) -> Any:
        """The value the call returns; or raise the call's error (observers hear either)."""
        driver = self._driver
        won = driver.winner()
        if won is None:
            # Nothing ran (too late to start), or the plan names a refused attempt.
            left_ms = max(self.expires_at - now, 0.0) * 1000
            too_late = DeadlineExceeded(
                f"deadline exceeded: {self.name} not called, {left_ms:.1f} ms left, below the "
                f"{self._shared.floor * 1000:.0f} ms needed to start an attempt"
            )
            raise self._failed(too_late, self._last_raised())
        outcome, sent = won
        if isinstance(outcome, Returned):
            self.ended(None)
            return outcome.value
        if isinstance(outcome, TimedOut) and sent.by_deadline:
            # Cut off by the deadline: the error is this module's own.
            raise self._failed(outcome.error, self._last_raised())
        error = outcome.error
        if driver.verdict(sent.index) is not Verdict.RETRY:
            self.ended(error)
            raise error  # not retriable: as itself
        if driver.deadline_ended(now):
            left_ms = max(self.expires_at - now, 0.0) * 1000
            failure: CallError = DeadlineExceeded(
                f"deadline exceeded: {left_ms:.1f} ms left, too little for another attempt at "
                f"{self.name} (the last raised {type(error).__name__})"
            )
        else:
            tried = len(self._started)
            failure = AttemptsExhausted(
                f"{self.name} failed on {tried} attempt{'s' if tried > 1 else ''}: "
                f"the last raised {type(error).__name__}"
            )
        raise self._failed(failure, error)

    def _failed(self, error: CallError, cause: BaseException | None) -> CallError:
        """``error`` (one this module made) with the call's attempts and ``cause``, observers told."""
        error.attempts = self.attempts
        if cause is not None:
            error.__cause__ = cause
        self.ended(error)
        return error

    def _last_raised(self) -> BaseException | None:
        """The last exception an attempt itself raised (not a timeout this module made)."""
        for outcome in reversed(self._driver.dropped()):
            if isinstance(outcome, Raised):
                return outcome.error
        return None

    def ended(self, error: BaseException | None) -> None:
        """Tell the observers the call is over (also when it was cancelled)."""
        if self.watch is not None:
            self.watch.call_ended(None, error, self.attempts)
