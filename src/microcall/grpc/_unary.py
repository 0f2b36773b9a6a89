"""One unary-unary call as a state machine: which attempt to start, what the outcome means.

Theory of operation. The strategy's plan decides when attempts start and
when the call is over (:mod:`microcall.policy.strategy`); this driver adds
what the HTTP engine adds around it, for gRPC: budgets, a target and its
breaker for each attempt, the outgoing metadata, the record of attempts, and
the classification of each status. It does no I/O: a runner (grpc.aio's in
``_aio_unary``, the blocking one in ``_sync``) loops::

    action = call.next(now)
    Start       -> send attempt ``index`` to target ``slot`` with ``timeout`` and ``metadata``
    Wait(until) -> wait for an attempt to end, or until ``until`` (None: an outcome)
    Finish      -> cancel what still runs (``call.abandon(i, now)``), then
                   ``call.result(action, now)``: the response, or the call's error raised

and reports each attempt's end with ``call.finished(index, outcome, now)``,
where the outcome is :class:`Answered` (status OK) or :class:`Failed`.

Every attempt is one unary call with its own timeout: what is left of the
call's deadline, or the strategy's per-attempt limit when that is shorter.
With several targets, a hedge or a retry goes to one the call has not tried
yet, when the balancer has one that is usable.
A cancelled loser costs an HTTP/2 stream reset, never a connection, so
losers are cancelled at once (an HTTP/1.1 client lingers instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from microcall._attempt import AttemptKind, RefusalReason
from microcall._call import Learner
from microcall.grpc._core import ChannelCore, MetadataPairs, status_error
from microcall.grpc._errors import CircuitOpen
from microcall.grpc._observe import Metadata, RpcAttempt, RpcMethod, RpcWatch
from microcall.grpc._status import classify
from microcall.observe.hooks import AttemptScope
from microcall.policy.balancer import Endpoint
from microcall.policy.classify import Verdict
from microcall.policy.strategy import Finish, Plan, Send, Wait

C = TypeVar("C")


@dataclass(slots=True)
class Answered:
    """An attempt that ended with OK: the response message and grpc's call object."""

    response: object
    call: object


@dataclass(slots=True)
class Failed:
    """An attempt that ended with another status."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: MetadataPairs
    cause: BaseException


Outcome = Answered | Failed


@dataclass(slots=True)
class Start:
    """Send attempt ``index`` to the target in position ``slot``."""

    index: int
    kind: AttemptKind
    slot: int
    timeout: float
    metadata: MetadataPairs


@dataclass(slots=True)
class _Sent:
    kind: AttemptKind
    started: float
    endpoint: Endpoint | None
    target: str
    by_deadline: bool
    scopes: list[AttemptScope] | None


class UnaryCall(Generic[C]):
    """The state of one unary-unary call with a plan (retries, hedges, several targets)."""

    __slots__ = (
        "_core",
        "_learner",
        "_metadata",
        "_outcomes",
        "_plan",
        "_records",
        "_refusal",
        "_sent",
        "expires_at",
        "method",
        "start",
        "watch",
        "winner_call",
    )

    def __init__(
        self,
        core: ChannelCore[C],
        method: RpcMethod,
        plan: Plan,
        learner: Learner | None,
        *,
        start: float,
        expires_at: float,
        metadata: MetadataPairs,
        watch: RpcWatch | None,
    ) -> None:
        self._core = core
        self.method = method
        self._plan = plan
        self._learner = learner
        self.start = start
        self.expires_at = expires_at
        self._metadata = metadata
        self.watch = watch
        self._sent: list[_Sent | None] = []
        self._outcomes: list[Outcome | None] = []
        self._records: list[RpcAttempt | None] = []
        self._refusal: CircuitOpen | None = None
        self.winner_call: object = None

    def next(self, now: float) -> Start | Wait | Finish:
        """The next thing to do: start an attempt, wait, or finish."""
        core = self._core
        plan = self._plan
        while True:
            action = plan.decide(now)
            if not isinstance(action, Send):
                return action
            kind = action.kind
            index = len(self._sent)
            refused = core.admit(kind, self._learner, now)
            endpoint: Endpoint | None = None
            if refused is None and not core.targets.single:
                endpoint = self._pick(now)
                if endpoint is None:
                    refused = RefusalReason.CIRCUIT_OPEN
            if refused is not None:
                # Never sent: the plan finishes with what it has; the record
                # shows the refusal.
                plan.refused()
                self._sent.append(None)
                self._outcomes.append(None)
                self._records.append(
                    RpcAttempt(index, kind, "", now - self.start, 0.0, error=refused, sent=False)
                )
                continue
            timeout, by_deadline = self.expires_at - now, True
            limit = plan.attempt_timeout
            if limit is not None and limit < timeout:
                timeout, by_deadline = limit, False
            targets = core.targets
            slot = 0 if endpoint is None else targets.slot_of(endpoint)
            target = targets.address_at(slot)
            metadata = self._metadata
            scopes = None
            if self.watch is not None:
                extra: Metadata = list(metadata)
                scopes = self.watch.attempt_started(index, kind, target, extra)
                metadata = tuple(extra)
            self._sent.append(_Sent(kind, now, endpoint, target, by_deadline, scopes))
            self._outcomes.append(None)
            self._records.append(None)
            return Start(index, kind, slot, timeout, metadata)

    def _pick(self, now: float) -> Endpoint | None:
        """The target for the next attempt, or None when its breaker refuses it."""
        targets = self._core.targets
        # A hedge goes to another target than the attempts it backs up, and a
        # retry to another than the ones that failed (the balancer falls back
        # to a tried one when no other is usable).
        tried = [sent.endpoint for sent in self._sent if sent is not None and sent.endpoint]
        endpoint = targets.pick(now, tried)
        breaker = endpoint.breaker
        if breaker is not None and not breaker.allow(now):
            self._refusal = CircuitOpen(
                f"circuit open for {endpoint.address}: {self.method.full_name} not sent"
            )
            return None
        targets.started(endpoint, now)
        return endpoint

    def finished(self, index: int, outcome: Outcome, now: float) -> None:
        """Attempt ``index`` ended with ``outcome``."""
        sent = self._sent[index]
        assert sent is not None
        if isinstance(outcome, Answered):
            verdict, retry_after = Verdict.ACCEPT, None
            code = "OK"
        else:
            verdict, retry_after = classify(
                outcome.code,
                outcome.trailing_metadata,
                retryable=self._core.options.retryable_codes,
                attempt_limited=not sent.by_deadline,
            )
            code = outcome.code.name
        latency = now - sent.started
        success = verdict is Verdict.ACCEPT
        if sent.endpoint is not None:
            self._core.targets.finished(sent.endpoint, latency, success, now)
        if self._learner is not None and (
            success
            or (isinstance(outcome, Failed) and outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED)
        ):
            # Timeouts count with the time they ran: leaving the slow tail out
            # would let the delay drift down and hedging feed on itself.
            self._learner[0].observe(self.method.full_name, latency, now)
        record = RpcAttempt(
            index, sent.kind, sent.target, sent.started - self.start, latency, code=code
        )
        self._records[index] = record
        if sent.scopes:
            RpcWatch.attempt_ended(sent.scopes, record)
        self._outcomes[index] = outcome
        self._plan.finished(index, verdict, now, retry_after)

    def abandon(self, index: int, now: float) -> None:
        """Attempt ``index`` lost the race (or the call was cancelled) and was cancelled."""
        sent = self._sent[index]
        assert sent is not None
        latency = now - sent.started
        record = RpcAttempt(
            index, sent.kind, sent.target, sent.started - self.start, latency, cancelled=True
        )
        self._records[index] = record
        if sent.scopes:
            RpcWatch.attempt_ended(sent.scopes, record)
        if sent.endpoint is not None:
            self._core.targets.abandoned(sent.endpoint, latency, now)
        if self._learner is not None:
            self._learner[0].observe(self.method.full_name, latency, now)

    @property
    def attempts(self) -> tuple[RpcAttempt, ...]:
        return tuple(record for record in self._records if record is not None)

    def result(self, action: Finish, now: float) -> object:
        """The response of the winning attempt; or raise the call's error."""
        attempts = self.attempts
        winner = action.winner
        # A plan whose only Send was refused may name that attempt as its
        # result (the single plan does): no outcome is no winner.
        if winner is not None and self._outcomes[winner] is None:
            winner = None
        if winner is None:
            error: BaseException = (
                self._refusal
                if self._refusal is not None
                else self._core.too_late(self.method, self.expires_at - now, attempts)
            )
            if self._refusal is not None:
                self._refusal.attempts = attempts
            self.ended(None, error)
            raise error
        outcome = self._outcomes[winner]
        sent = self._sent[winner]
        assert outcome is not None
        assert sent is not None
        if isinstance(outcome, Answered):
            self.winner_call = outcome.call
            self.ended(outcome.response, None)
            return outcome.response
        self.winner_call = outcome.cause
        error = status_error(
            self.method,
            sent.target,
            outcome.code,
            outcome.details,
            outcome.trailing_metadata,
            by_deadline=sent.by_deadline,
            attempts=attempts,
        )
        self.ended(None, error)
        raise error from outcome.cause

    def ended(self, response: object | None, error: BaseException | None) -> None:
        """Tell the observers the call is over (also when it was cancelled)."""
        if self.watch is not None:
            self.watch.call_ended(response, error, self.attempts)
