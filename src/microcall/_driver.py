"""One logical call as a state machine, free of I/O: the same driver for HTTP, gRPC, callables.

Theory of operation. The strategy's plan decides when attempts start and
when the call is over (:mod:`microcall.policy.strategy`). :class:`CallDriver`
adds what every protocol adds around it: the budgets' admission of retries
and hedges (:class:`~microcall._call.CallPolicies`), an endpoint and its
breaker for each attempt (:class:`~microcall._group.EndpointGroup`), each
attempt's time limit, the judgement of each outcome, what the endpoint's
record and the learned hedge delay hear of it, and the record of attempts.
A runner (the HTTP engine's asyncio tasks in ``_engine.py``; grpc.aio tasks
and blocking grpc futures in ``grpc/``; a resilient callable's tasks or the
caller's thread in ``resilience/``) loops::

    action = driver.next(now)
    Start       -> send attempt ``action.index`` to ``action.endpoint`` (None: the
                   call's own target) with ``action.timeout``
    Wait(until) -> wait for an attempt to end, or until ``until`` (None: an outcome)
    Finish      -> stop what still runs (``driver.lost(index, now)`` for each),
                   then ``driver.winner()``: the outcome that is the call's, or
                   None (``circuit_open`` names the target a breaker refused;
                   otherwise the deadline left no time for an attempt)

and reports each attempt's end with ``driver.finished(index, outcome, now)``,
which returns the attempt's record for the observers.

An attempt is *refused* (never sent: a budget or a breaker said no, or,
for a retry or hedge, the runner's ``refuse_extra``: HTTP's for a body read
once; the record says why, the plan sends nothing more), *started* then *finished*
(its outcome judged, heard by its endpoint and the learned delay, handed to
the plan), or started then *lost* (still running when the call was decided,
or when the call itself was cancelled: recorded as cancelled). A lost
attempt is *settled* once it is really over (``driver.settled``): its
endpoint and the learned delay then hear how it ended. A runner that cancels
losers at once (gRPC: a cancelled stream costs a reset, never a connection)
settles them at once; one that lets them linger (HTTP/1.1, to keep the
connection) settles them when they finish or are cancelled.

Why these rules:

* An attempt gets what is left of the deadline, or the strategy's own
  per-attempt limit when that is shorter by more than the floor: an attempt
  ended by its own limit with less than the floor left could not be followed
  by another, so it runs to the deadline instead and says so (``by_deadline``).
* A retry or a hedge goes to an endpoint this call has not sent to yet, when
  the balancer has a usable one: a hedge backs up the attempts still running,
  a retry avoids the ones that failed.
* The learned delay hears successes and timeouts with the time they ran, and
  lost attempts with the time until they were stopped: leaving the slow tail
  out would let the delay drift down and hedging feed on itself.
* The deadline, not the strategy, ended a call whose winning attempt timed out
  on its own limit when too little time was left for another, or when the
  strategy had attempts left and would have sent one (:meth:`deadline_ended`):
  the caller then hears ``DeadlineExceeded``, whatever jitter did.

The driver knows an outcome only through its protocol's :class:`Rules`: an
HTTP outcome is a ``Response`` or a ``CallError``, a gRPC one ``Answered`` or
``Failed``, a callable's a value returned, an exception raised or a time
limit reached; the rules judge it (a verdict and a retry-after), say whether it
is a timeout, name an endpoint and write the attempt's record. The driver
never sleeps, never reads the clock (``now`` is passed in) and never imports
asyncio or threads: tests/test_call_driver.py drives it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from microcall._attempt import Attempt, AttemptKind, RefusalReason
from microcall._call import CallPolicies, Learner
from microcall._group import EndpointGroup
from microcall.policy.balancer import Endpoint
from microcall.policy.classify import Verdict
from microcall.policy.strategy import Finish, Plan, Send, Strategy, Wait

OutcomeT = TypeVar("OutcomeT")
RefuseExtra = Callable[[AttemptKind], RefusalReason | None]
"""Why a retry or hedge of this call may not go, whatever the budgets say (None: it may)."""
OutcomeT_contra = TypeVar("OutcomeT_contra", contravariant=True)


class Rules(Protocol[OutcomeT_contra]):
    """What the driver needs to know of a protocol: one object per client or channel."""

    @property
    def record_type(self) -> type[Attempt]:
        """The class of this protocol's attempt records (refused and cancelled ones too)."""

    def judge(
        self, outcome: OutcomeT_contra, attempt_limited: bool
    ) -> tuple[Verdict, float | None]:
        """The verdict on ``outcome`` and the least wait before another attempt (None: any).

        ``attempt_limited``: the attempt ran under the strategy's own time
        limit, shorter than the call's deadline.
        """

    def timed_out(self, outcome: OutcomeT_contra) -> bool:
        """Whether ``outcome`` is the attempt running out of time."""

    def target(self, endpoint: Endpoint) -> str:
        """How records and errors name ``endpoint`` (never with credentials)."""

    def record(
        self,
        index: int,
        kind: AttemptKind,
        target: str,
        offset: float,
        duration: float,
        outcome: OutcomeT_contra,
    ) -> Attempt:
        """The record of an attempt that ended with ``outcome``."""


@dataclass(slots=True)
class Start:
    """Send attempt ``index`` now, to ``endpoint`` (None: the call's own target).

    ``timeout`` is its time limit; ``by_deadline`` says that limit is what is
    left of the call's deadline, not the strategy's per-attempt limit.
    ``target`` names where it goes; ``started`` is when it was decided.
    """

    index: int
    kind: AttemptKind
    endpoint: Endpoint | None
    target: str
    timeout: float
    by_deadline: bool
    started: float


def allowed_attempts(strategy: Strategy, replayable: bool) -> int:
    """The most attempts ``strategy`` sends for a call (one when it may not be sent twice)."""
    if not replayable:
        return 1
    # A strategy of the caller's own may not say: one, as for a single attempt.
    attempts: int = getattr(strategy, "attempts", 1)
    return attempts


def start_call(
    policies: CallPolicies,
    rules: Rules[OutcomeT],
    strategy: Strategy,
    *,
    replayable: bool,
    route: str,
    start: float,
    expires_at: float,
    group: EndpointGroup | None,
    target: str,
    refuse_extra: RefuseExtra | None = None,
    refused_target: str = "",
) -> CallDriver[OutcomeT]:
    """The driver of a call beginning at ``start``: its plan made, nothing sent yet.

    ``group``: the endpoints each attempt picks from (None: every attempt
    goes to the call's own ``target``). ``route`` names the call for the
    learned hedge delay. ``refuse_extra`` is asked before a retry or hedge
    is admitted: a reason refuses it (HTTP: a request body read once).
    learned hedge delay. ``refused_target``: the endpoint a refused
    attempt's record names (none by default: it went nowhere; a callable's
    records all name the callable).
    """
    plan, learner = policies.plan(
        strategy, replayable=replayable, route=route, start=start, expires_at=expires_at
    )
    return CallDriver(
        policies,
        rules,
        plan,
        learner,
        group=group,
        start=start,
        expires_at=expires_at,
        route=route,
        target=target,
        strategy=strategy,
        replayable=replayable,
        refuse_extra=refuse_extra,
        refused_target=refused_target,
    )


class CallDriver(Generic[OutcomeT]):
    """The state of one logical call: see the module doc."""

    __slots__ = (
        "_expires_at",
        "_floor",
        "_group",
        "_learner",
        "_outcomes",
        "_plan",
        "_policies",
        "_records",
        "_refuse_extra",
        "_refused",
        "_refused_target",
        "_replayable",
        "_route",
        "_rules",
        "_sent",
        "_strategy",
        "_target",
        "_verdicts",
        "_winner",
        "circuit_open",
        "start",
    )

    def __init__(
        self,
        policies: CallPolicies,
        rules: Rules[OutcomeT],
        plan: Plan,
        learner: Learner | None,
        *,
        group: EndpointGroup | None,
        start: float,
        expires_at: float,
        route: str,
        target: str,
        strategy: Strategy | None,
        replayable: bool,
        refuse_extra: RefuseExtra | None = None,
        refused_target: str = "",
    ) -> None:
        self._policies = policies
        self._rules = rules
        self._plan = plan
        self._learner = learner
        self._group = group
        self.start = start
        self._expires_at = expires_at
        self._floor = policies.floor
        self._route = route
        self._target = target
        # The strategy the plan came from, for how many attempts it would
        # send (None: not known; then only the time left says whether the
        # deadline ended the call).
        self._strategy = strategy
        self._replayable = replayable
        self._refuse_extra = refuse_extra
        self._refused_target = refused_target
        # By attempt index; a refused attempt has no Start and no outcome.
        self._sent: list[Start | None] = []
        self._outcomes: list[OutcomeT | None] = []
        self._records: list[Attempt | None] = []
        # Each finished attempt's verdict, judged once: a callable's rules
        # run the caller's own classifier, which need not be cheap or pure.
        self._verdicts: list[Verdict | None] = []
        self._refused = False  # a budget or a breaker stopped an attempt
        self._winner: int | None = None
        # The target whose breaker refused an attempt (the last one), if any.
        self.circuit_open: str | None = None

    # ------------------------------------------------------------ decisions

    def next(self, now: float) -> Start | Wait | Finish:
        """The next thing to do: start an attempt, wait, or finish."""
        plan = self._plan
        while True:
            action = plan.decide(now)
            if not isinstance(action, Send):
                if isinstance(action, Finish):
                    self._winner = action.winner
                return action
            kind = action.kind
            index = len(self._sent)
            refused = None
            if self._refuse_extra is not None and kind is not AttemptKind.FIRST:
                refused = self._refuse_extra(kind)
            if refused is None:
                refused = self._policies.admit(kind, self._learner, now)
            endpoint: Endpoint | None = None
            if refused is None and self._group is not None:
                endpoint = self._pick(self._group, now)
                if endpoint is None:
                    refused = RefusalReason.CIRCUIT_OPEN
            if refused is not None:
                # Never sent: the plan finishes with what it has; the record
                # shows the refusal.
                self._refused = True
                plan.refused()
                self._sent.append(None)
                self._outcomes.append(None)
                self._verdicts.append(None)
                self._records.append(
                    self._rules.record_type(
                        index,
                        kind,
                        self._refused_target,
                        now - self.start,
                        0.0,
                        error=refused,
                        sent=False,
                    )
                )
                continue
            timeout, by_deadline = self._expires_at - now, True
            limit = plan.attempt_timeout
            # An attempt whose own limit would end it with less than the floor
            # left is ended by the deadline: no attempt could follow it.
            if limit is not None and limit < timeout - self._floor:
                timeout, by_deadline = limit, False
            target = self._target if endpoint is None else self._rules.target(endpoint)
            start = Start(index, kind, endpoint, target, timeout, by_deadline, now)
            self._sent.append(start)
            self._outcomes.append(None)
            self._verdicts.append(None)
            self._records.append(None)
            return start

    def _pick(self, group: EndpointGroup, now: float) -> Endpoint | None:
        """The endpoint for the next attempt, or None when its breaker refuses it."""
        # A hedge goes elsewhere than the attempts it backs up, a retry
        # elsewhere than the ones that failed (the balancer falls back to a
        # tried one when no other is usable).
        tried = [sent.endpoint for sent in self._sent if sent is not None and sent.endpoint]
        endpoint = group.pick(now, tried)
        breaker = endpoint.breaker
        if breaker is not None and not breaker.allow(now):
            self.circuit_open = self._rules.target(endpoint)
            return None
        group.started(endpoint, now)
        return endpoint

    # ------------------------------------------------------------ outcomes

    def finished(self, index: int, outcome: OutcomeT, now: float) -> Attempt:
        """Attempt ``index`` ended with ``outcome``: judge it, tell everyone; its record."""
        sent = self._sent[index]
        assert sent is not None
        rules = self._rules
        verdict, retry_after = rules.judge(outcome, not sent.by_deadline)
        latency = now - sent.started
        self._heard(sent, outcome, verdict is Verdict.ACCEPT, latency, now)
        record = rules.record(
            index, sent.kind, sent.target, sent.started - self.start, latency, outcome
        )
        self._records[index] = record
        self._outcomes[index] = outcome
        self._verdicts[index] = verdict
        self._plan.finished(index, verdict, now, retry_after)
        return record

    def lost(self, index: int, now: float) -> Attempt:
        """Attempt ``index`` was still running when the call ended: its cancelled record.

        Its endpoint and the learned delay hear of it when it is settled.
        """
        sent = self._sent[index]
        assert sent is not None
        record = self._rules.record_type(
            index,
            sent.kind,
            sent.target,
            sent.started - self.start,
            now - sent.started,
            cancelled=True,
        )
        self._records[index] = record
        return record

    def settled(self, index: int, outcome: OutcomeT | None, now: float) -> None:
        """Lost attempt ``index`` is over: it ended with ``outcome``, or was cancelled (None)."""
        sent = self._sent[index]
        assert sent is not None
        latency = now - sent.started
        if outcome is not None:
            verdict, _ = self._rules.judge(outcome, not sent.by_deadline)
            self._heard(sent, outcome, verdict is Verdict.ACCEPT, latency, now)
            return
        if sent.endpoint is not None and self._group is not None:
            self._group.abandoned(sent.endpoint, latency, now)
        if self._learner is not None:
            self._learner[0].observe(self._route, latency, now)

    def _heard(
        self, sent: Start, outcome: OutcomeT, success: bool, latency: float, now: float
    ) -> None:
        """The endpoint's record and the learned delay hear how an attempt ended."""
        if sent.endpoint is not None and self._group is not None:
            self._group.finished(sent.endpoint, latency, success, now)
        learner = self._learner
        if learner is not None and (success or self._rules.timed_out(outcome)):
            learner[0].observe(self._route, latency, now)

    # ------------------------------------------------------------ result

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The records of the attempts so far, refused ones included, in order."""
        # filter(None, ...): the records present (a record is always true), without a generator.
        return tuple(filter(None, self._records))

    def winner(self) -> tuple[OutcomeT, Start] | None:
        """The outcome that is the call's and its attempt, once finished; None: none has one.

        A plan whose only Send was refused may name that attempt: no outcome
        is no winner.
        """
        index = self._winner
        if index is None:
            return None
        outcome = self._outcomes[index]
        sent = self._sent[index]
        if outcome is None or sent is None:
            return None
        return outcome, sent

    def deadline_ended(self, now: float) -> bool:
        """Whether the deadline, not the strategy, ended a call whose winner timed out.

        It did when too little is left to start another attempt, or when the
        strategy would have sent another (attempts left, none refused, the
        timeout retriable) and only the deadline kept it from doing so.
        """
        if self._expires_at - now < self._floor:
            return True
        strategy = self._strategy
        if (
            self._refused
            or strategy is None
            or len(self._sent) >= allowed_attempts(strategy, self._replayable)
        ):
            return False
        won = self.winner()
        if won is None:
            return False
        return self._verdicts[won[1].index] is Verdict.RETRY

    def verdict(self, index: int) -> Verdict | None:
        """The verdict on attempt ``index``'s outcome (None: it has not finished, or was refused)."""
        return self._verdicts[index]

    def dropped(self) -> list[OutcomeT]:
        """The outcomes of finished attempts that are not the call's (retried, or beaten)."""
        winner = self._winner
        return [
            outcome
            for index, outcome in enumerate(self._outcomes)
            if outcome is not None and index != winner
        ]
