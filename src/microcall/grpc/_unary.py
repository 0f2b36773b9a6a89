"""One unary-unary call with a plan: the call driver, adapted to gRPC.

The decisions are :mod:`microcall._driver`'s, the same as for HTTP calls:
which attempt to start and when, which target it goes to (a hedge or a retry
to one the call has not tried yet, when the balancer has one that is usable)
and its breaker, each attempt's time limit (what is left of the call's
deadline, or the strategy's per-attempt limit when that is shorter), the
budgets, the record of attempts. This module adds what is gRPC's: the
judgement of a status (:mod:`._status`: retriable codes, the server's
pushback), the slot of a target's channel, the outgoing metadata with the
observers' additions, and the error a status becomes. It does no I/O: a
runner (grpc.aio's in ``_aio_unary``, the blocking one in ``_sync``) loops::

    action = call.next(now)
    Start       -> send attempt ``index`` to target ``slot`` with ``timeout`` and ``metadata``
    Wait(until) -> wait for an attempt to end, or until ``until`` (None: an outcome)
    Finish      -> cancel what still runs (``call.abandon(i, now)``), then
                   ``call.result(action, now)``: the response, or the call's error raised

and reports each attempt's end with ``call.finished(index, outcome, now)``,
where the outcome is :class:`Answered` (status OK) or :class:`Failed`.

A cancelled loser costs an HTTP/2 stream reset, never a connection, so
losers are cancelled at once (an HTTP/1.1 client lingers instead).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import grpc

from microcall._attempt import Attempt, AttemptKind
from microcall._call import Learner
from microcall._driver import CallDriver
from microcall._driver import Start as AttemptStart
from microcall.grpc._core import ChannelCore, MetadataPairs, status_error, wire_timeout
from microcall.grpc._errors import CircuitOpen
from microcall.grpc._observe import Metadata, RpcAttempt, RpcMethod, RpcWatch
from microcall.grpc._status import classify
from microcall.observe.hooks import AttemptScope
from microcall.policy.balancer import Endpoint
from microcall.policy.classify import Verdict
from microcall.policy.strategy import Finish, Plan, Strategy, Wait

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
    cause: BaseException | None  # grpc's error (None for a stream: it has no other)


Outcome = Answered | Failed


@dataclass(slots=True)
class Start:
    """Send attempt ``index`` to the target in position ``slot``."""

    index: int
    kind: AttemptKind
    slot: int
    timeout: float
    metadata: MetadataPairs


class GrpcRules:
    """What the call driver needs to know of gRPC (see :class:`microcall._driver.Rules`).

    An outcome is :class:`Answered` or :class:`Failed`; a status is judged
    as :mod:`._status` says (retriable codes, pushback), and a target is
    named by its address.
    """

    __slots__ = ("_retryable",)

    record_type = RpcAttempt

    def __init__(self, retryable: Collection[grpc.StatusCode]) -> None:
        self._retryable = retryable

    def judge(self, outcome: Outcome, attempt_limited: bool) -> tuple[Verdict, float | None]:
        if isinstance(outcome, Answered):
            return Verdict.ACCEPT, None
        return classify(
            outcome.code,
            outcome.trailing_metadata,
            retryable=self._retryable,
            attempt_limited=attempt_limited,
        )

    def timed_out(self, outcome: Outcome) -> bool:
        return isinstance(outcome, Failed) and outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED

    def target(self, endpoint: Endpoint) -> str:
        return endpoint.address

    @staticmethod
    def record(
        index: int,
        kind: AttemptKind,
        target: str,
        offset: float,
        duration: float,
        outcome: Outcome,
    ) -> RpcAttempt:
        code = "OK" if isinstance(outcome, Answered) else outcome.code.name
        return RpcAttempt(index, kind, target, offset, duration, code=code)


class UnaryCall(Generic[C]):
    """One unary-unary call with a plan (retries, hedges, several targets): the driver, for gRPC.

    Made with :meth:`planned` (or from a plan already made, as tests do;
    given no ``strategy``, a last attempt that timed out on its own limit is
    taken to have spent the strategy's attempts).
    """

    __slots__ = (
        "_core",
        "_driver",
        "_metadata",
        "_scopes",
        "expires_at",
        "method",
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
        strategy: Strategy | None = None,
    ) -> None:
        self._core = core
        self.method = method
        self.expires_at = expires_at
        self._metadata = metadata
        self.watch = watch
        targets = core.targets
        self._driver: CallDriver[Outcome] = CallDriver(
            core.policies,
            GrpcRules(core.options.retryable_codes),
            plan,
            learner,
            # One fixed target without a breaker: nothing to pick.
            group=None if targets.single else targets,
            start=start,
            expires_at=expires_at,
            route=method.full_name,
            target=targets.address_at(0),
            strategy=strategy,
            replayable=method.idempotent,
        )
        # Each attempt's observer scopes, when the call has observers.
        self._scopes: dict[int, list[AttemptScope]] | None = None if watch is None else {}
        self.winner_call: object = None

    @classmethod
    def planned(
        cls,
        core: ChannelCore[C],
        method: RpcMethod,
        strategy: Strategy,
        *,
        start: float,
        expires_at: float,
        metadata: MetadataPairs,
        watch: RpcWatch | None,
    ) -> UnaryCall[C]:
        """The call beginning at ``start`` under ``strategy``: its plan made, nothing sent yet."""
        plan, learner = core.plan(method, strategy, start, expires_at)
        return cls(
            core,
            method,
            plan,
            learner,
            start=start,
            expires_at=expires_at,
            metadata=metadata,
            watch=watch,
            strategy=strategy,
        )

    @property
    def start(self) -> float:
        return self._driver.start

    def next(self, now: float) -> Start | Wait | Finish:
        """The next thing to do: start an attempt, wait, or finish."""
        action = self._driver.next(now)
        if not isinstance(action, AttemptStart):
            return action
        endpoint = action.endpoint
        slot = 0 if endpoint is None else self._core.targets.slot_of(endpoint)
        metadata = self._metadata
        if self.watch is not None and self._scopes is not None:
            extra: Metadata = list(metadata)
            scopes = self.watch.attempt_started(action.index, action.kind, action.target, extra)
            if scopes:
                self._scopes[action.index] = scopes
            metadata = tuple(extra)
        return Start(action.index, action.kind, slot, wire_timeout(action.timeout), metadata)

    def finished(self, index: int, outcome: Outcome, now: float) -> None:
        """Attempt ``index`` ended with ``outcome``."""
        self._ended(index, self._driver.finished(index, outcome, now))

    def abandon(self, index: int, now: float) -> None:
        """Attempt ``index`` lost the race (or the call was cancelled) and was cancelled."""
        self._ended(index, self._driver.lost(index, now))
        self._driver.settled(index, None, now)

    def _ended(self, index: int, record: Attempt) -> None:
        scopes = None if self._scopes is None else self._scopes.pop(index, None)
        if scopes:
            RpcWatch.attempt_ended(scopes, cast(RpcAttempt, record))

    @property
    def attempts(self) -> tuple[RpcAttempt, ...]:
        # GrpcRules writes every record: RpcAttempts all.
        return cast("tuple[RpcAttempt, ...]", self._driver.attempts)

    def result(self, action: Finish, now: float) -> object:
        """The response of the winning attempt; or raise the call's error."""
        call = self._driver
        attempts = self.attempts
        won = call.winner()
        if won is None:
            refused = call.circuit_open
            error: BaseException = (
                self._core.too_late(self.method, self.expires_at - now, attempts)
                if refused is None
                else CircuitOpen(
                    f"circuit open for {refused}: {self.method.full_name} not sent",
                    attempts=attempts,
                )
            )
            self.ended(None, error)
            raise error
        outcome, sent = won
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
            by_deadline=sent.by_deadline
            or (outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED and call.deadline_ended(now)),
            attempts=attempts,
        )
        self.ended(None, error)
        raise error from outcome.cause

    def ended(self, response: object | None, error: BaseException | None) -> None:
        """Tell the observers the call is over (also when it was cancelled)."""
        if self.watch is not None:
            self.watch.call_ended(response, error, self.attempts)
