"""One call of a callable as a state machine: which attempt to start, what an outcome means.

Theory of operation. The strategy's plan decides when attempts start and
when the call is over (:mod:`microcall.policy.strategy`); the decisions HTTP
and gRPC calls share (the plan, the budgets' admission, the learned hedge
delay) come from :class:`microcall._call.CallPolicies`. This driver adds
what the HTTP engine adds around them, for a callable: the deadline each
attempt inherits, the classification of each outcome, the record of
attempts, the observers, and the one result or error of the call. It does no
I/O and reads no clock: a runner (``_async`` on an event loop, ``_sync`` on
the caller's thread) loops::

    action = call.next(now)
    Start       -> run attempt ``index`` under ``deadline`` (the context it inherits)
    Wait(until) -> wait for an attempt to end, or until ``until`` (None: an outcome)
    Finish      -> stop what still runs (``call.abandon(i, now)``), then
                   ``call.result(action, now)``: the value, or the call's error raised

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
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from microcall._attempt import Attempt, AttemptKind
from microcall._call import CallPolicies, Learner
from microcall._clock import Clock
from microcall.context import inherit_deadline
from microcall.deadline import Deadline
from microcall.errors import AttemptsExhausted, AttemptTimeout, CallError, DeadlineExceeded
from microcall.observe.hooks import AttemptScope, Observer
from microcall.policy.classify import Verdict
from microcall.policy.strategy import Finish, Plan, Send, Strategy, Wait
from microcall.resilience._classify import Outcome, OutcomeClassifier, Raised, Returned
from microcall.resilience._observe import CallWatch, request_for

Sleep = Callable[[float], object]
"""``sleep(seconds)``: blocking, or returning an awaitable (which only async calls can await)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Shared:
    """What every call through one :class:`~microcall.Resilience` shares."""

    strategy: Strategy
    classify: OutcomeClassifier
    timeout: float
    floor: float
    clock: Clock
    policies: CallPolicies
    observers: tuple[Observer, ...]
    # Sync calls may come from many threads at once; the budget and the
    # learned delays are written without locks of their own.
    lock: threading.Lock
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


@dataclass(slots=True)
class _Sent:
    kind: AttemptKind
    started: float
    by_deadline: bool
    scopes: list[AttemptScope] | None


class CallableCall:
    """The state of one call of a callable: its plan, attempts and outcomes."""

    __slots__ = (
        "_learner",
        "_made",
        "_outcomes",
        "_plan",
        "_records",
        "_refused",
        "_sent",
        "_shared",
        "_verdicts",
        "expires_at",
        "name",
        "start",
        "watch",
    )

    def __init__(self, shared: Shared, name: str, now: float) -> None:
        self._shared = shared
        self.name = name
        self.start = now
        self.expires_at = inherit_deadline(now + shared.timeout)
        self.watch = CallWatch(shared.observers, request_for(name)) if shared.observers else None
        policies = shared.policies
        with shared.lock:
            if policies.budget is not None:
                policies.budget.deposit(now)
            self._plan: Plan
            self._learner: Learner | None
            self._plan, self._learner = policies.plan(
                shared.strategy,
                replayable=True,
                route=name,
                start=now,
                expires_at=self.expires_at,
            )
        self._sent: list[_Sent | None] = []
        self._outcomes: list[Outcome | None] = []
        self._verdicts: list[Verdict] = []
        self._records: list[Attempt | None] = []
        self._refused = False
        self._made: set[int] = set()  # attempts whose error the driver made (timeouts)

    # ------------------------------------------------------------ decisions

    def next(self, now: float) -> Start | Wait | Finish:
        """The next thing to do: start an attempt, wait, or finish."""
        shared = self._shared
        plan = self._plan
        while True:
            action = plan.decide(now)
            if not isinstance(action, Send):
                return action
            kind = action.kind
            index = len(self._sent)
            with shared.lock:
                refused = shared.policies.admit(kind, self._learner, now)
            if refused is not None:
                # Never run: the plan finishes with what it has; the record shows why.
                self._refused = True
                plan.refused()
                self._add(None, None, Verdict.STOP)
                self._records.append(
                    Attempt(
                        index, kind, self.name, now - self.start, 0.0, error=refused, sent=False
                    )
                )
                continue
            timeout, by_deadline = self.expires_at - now, True
            limit = plan.attempt_timeout
            # As for HTTP: an attempt whose own limit would leave less than the
            # floor before the deadline is ended by the deadline instead.
            if limit is not None and limit < timeout - shared.floor:
                timeout, by_deadline = limit, False
            headers: dict[str, str] = {}
            scopes = self.watch.attempt_started(index, kind, headers) if self.watch else None
            self._add(_Sent(kind, now, by_deadline, scopes), None, Verdict.STOP)
            self._records.append(None)
            deadline = Deadline(now + timeout, clock=shared.clock)
            return Start(index, kind, timeout, deadline, headers)

    def _add(self, sent: _Sent | None, outcome: Outcome | None, verdict: Verdict) -> None:
        self._sent.append(sent)
        self._outcomes.append(outcome)
        self._verdicts.append(verdict)

    def finished(self, index: int, outcome: Outcome, now: float) -> None:
        """Attempt ``index`` returned or raised."""
        if isinstance(outcome, Returned):
            verdict = self._shared.classify(outcome.value, None)
        else:
            verdict = self._shared.classify(None, outcome.error)
        self._ended(index, outcome, verdict, now)

    def timed_out(self, index: int, now: float) -> None:
        """Attempt ``index`` ran out of its own time (or the call's) and was cancelled."""
        sent = self._sent[index]
        assert sent is not None
        self._made.add(index)
        if sent.by_deadline:
            error: Exception = DeadlineExceeded(
                f"deadline exceeded: {self.name} attempt #{index} was still running"
            )
            verdict = Verdict.STOP
        else:
            # Always worth another attempt: attempt_timeout exists to abandon a
            # stuck attempt while the deadline still leaves time for the next.
            error = AttemptTimeout(f"{self.name}: attempt #{index} ran out of its own time")
            verdict = Verdict.RETRY
        self._ended(index, Raised(error), verdict, now)

    def _ended(self, index: int, outcome: Outcome, verdict: Verdict, now: float) -> None:
        sent = self._sent[index]
        assert sent is not None
        latency = now - sent.started
        error = None if isinstance(outcome, Returned) else type(outcome.error).__name__
        learner = self._learner
        if learner is not None and (verdict is Verdict.ACCEPT or index in self._made):
            # Timeouts count with the time they ran: leaving the slow tail out
            # would let the delay drift down and hedging feed on itself.
            with self._shared.lock:
                learner[0].observe(self.name, latency, now)
        record = Attempt(
            index, sent.kind, self.name, sent.started - self.start, latency, error=error
        )
        self._records[index] = record
        if sent.scopes:
            CallWatch.attempt_ended(sent.scopes, record)
        self._outcomes[index] = outcome
        self._verdicts[index] = verdict
        self._plan.finished(index, verdict, now, None)

    def abandon(self, index: int, now: float) -> None:
        """Attempt ``index`` lost the race (or the call was given up) and is being cancelled."""
        sent = self._sent[index]
        assert sent is not None
        latency = now - sent.started
        record = Attempt(
            index, sent.kind, self.name, sent.started - self.start, latency, cancelled=True
        )
        self._records[index] = record
        if sent.scopes:
            CallWatch.attempt_ended(sent.scopes, record)
        if self._learner is not None:
            with self._shared.lock:
                self._learner[0].observe(self.name, latency, now)

    # ------------------------------------------------------------ the end

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return tuple(record for record in self._records if record is not None)

    def result(self, action: Finish, now: float) -> Any:
        """The value the call returns; or raise the call's error (observers hear either)."""
        winner = action.winner
        outcome = None if winner is None else self._outcomes[winner]
        if outcome is None:
            # Nothing ran (too late to start), or the plan names a refused attempt.
            left_ms = max(self.expires_at - now, 0.0) * 1000
            too_late = DeadlineExceeded(
                f"deadline exceeded: {self.name} not called, {left_ms:.1f} ms left, below the "
                f"{self._shared.floor * 1000:.0f} ms needed to start an attempt"
            )
            raise self._failed(too_late, self._last_raised())
        if isinstance(outcome, Returned):
            self.ended(None)
            return outcome.value
        assert winner is not None
        error = outcome.error
        if self._verdicts[winner] is not Verdict.RETRY:
            if winner in self._made:  # cut off by the deadline: the driver's own error
                assert isinstance(error, DeadlineExceeded)
                raise self._failed(error, self._last_raised())
            self.ended(error)
            raise error  # not retriable: as itself
        if self._deadline_ended(now):
            left_ms = max(self.expires_at - now, 0.0) * 1000
            failure: CallError = DeadlineExceeded(
                f"deadline exceeded: {left_ms:.1f} ms left, too little for another attempt at "
                f"{self.name} (the last raised {type(error).__name__})"
            )
        else:
            tried = sum(1 for sent in self._sent if sent is not None)
            failure = AttemptsExhausted(
                f"{self.name} failed on {tried} attempt{'s' if tried > 1 else ''}: "
                f"the last raised {type(error).__name__}"
            )
        raise self._failed(failure, error)

    def _failed(self, error: CallError, cause: BaseException | None) -> CallError:
        """``error`` (one the driver made) with the call's attempts and ``cause``, observers told."""
        error.attempts = self.attempts
        if cause is not None:
            error.__cause__ = cause
        self.ended(error)
        return error

    def _deadline_ended(self, now: float) -> bool:
        """Whether the deadline, not the strategy's attempts or the budget, ended the call.

        It did when too little is left to start another attempt, or when the
        strategy would have run another (attempts left, none refused) and only
        the deadline kept it from doing so.
        """
        if self.expires_at - now < self._shared.floor:
            return True
        allowed = getattr(self._shared.strategy, "attempts", 1)
        tried = sum(1 for sent in self._sent if sent is not None)
        return tried < allowed and not self._refused

    def _last_raised(self) -> BaseException | None:
        """The last exception an attempt itself raised (not a timeout the driver made)."""
        for index in range(len(self._outcomes) - 1, -1, -1):
            outcome = self._outcomes[index]
            if isinstance(outcome, Raised) and index not in self._made:
                return outcome.error
        return None

    def ended(self, error: BaseException | None) -> None:
        """Tell the observers the call is over (also when it was cancelled)."""
        if self.watch is not None:
            self.watch.call_ended(error, self.attempts)
