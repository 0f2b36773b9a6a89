"""The observer seam for gRPC calls: how metrics and traces see calls and attempts.

The same shape as HTTP's (:mod:`microcall.observe.hooks`), with gRPC's nouns:
a channel tells each observer when a call starts, when each attempt starts
and ends, and when the call ends, and an observer returns a scope object for
each so it can keep its own state::

    class RpcObserver(Protocol):
        def call_started(self, method: RpcMethod) -> RpcCallScope | None

    class RpcCallScope(Protocol):
        def attempt_started(self, index, kind, target, metadata) -> AttemptScope | None
        def call_ended(self, response, error, attempts) -> None

``metadata`` is the attempt's outgoing metadata, a list of ``(key, value)``
pairs the observer may append to: a tracer adds ``traceparent`` and
``tracestate`` there, and the server interceptor's counterpart reads them
back. ``attempts`` are :class:`RpcAttempt` records, refused ones included
(``sent=False``: retry budget, breaker). A streaming call is one attempt
that ends when the stream does. Breaker state changes and ejections are
events on the channel's ``breaker_events`` / ``ejection_events`` lists.

Metrics and tracing: :class:`~microcall.grpc.ObserverAdapter` makes any
client observer of :mod:`microcall.observe` (``ClientMetrics``,
``ClientTracing``) an ``RpcObserver``, so one hook interface serves both
protocols. Server side, the interceptors count into a
:class:`~microcall.server.ServerStats` (``interceptor.stats``) and report
each call to ``ServerOptions.observers``.

With no observers the channel skips all of this. Observers run inside the
call: keep them cheap; an exception from one is logged (rate-limited, as
on the HTTP side: a broken observer fails on every call) and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from microcall._attempt import Attempt, AttemptKind
from microcall.observe.hooks import AttemptScope
from microcall.observe.logs import observer_failed

Cardinality = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
Metadata = list[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """A method as a channel calls it: ``/bookstore.Recommendations/Recommend``.

    ``service`` and ``name`` are its two parts; ``idempotent`` says whether
    the channel may send it more than once (retries, hedges). ``authority``
    is the channel's first target (``host:port``), the server a metric or a
    span names before an attempt has picked one.
    """

    full_name: str
    service: str
    name: str
    cardinality: Cardinality
    idempotent: bool
    authority: str = ""

    @classmethod
    def parse(
        cls, full_name: str, cardinality: Cardinality, *, idempotent: bool, authority: str = ""
    ) -> RpcMethod:
        service, _, name = full_name.lstrip("/").rpartition("/")
        return cls(full_name, service, name, cardinality, idempotent, authority)


@dataclass(slots=True)
class RpcAttempt(Attempt):
    """One attempt of a gRPC call: ``code`` is the status it ended with (``"OK"``...).

    ``endpoint`` is the target it went to; ``status`` (an HTTP status) is
    always None. ``error`` says why an attempt was not sent.
    """

    code: str | None = None

    def describe(self) -> str:
        if not self.sent:
            return f"#{self.index} {self.kind} not sent: {self.error}"
        outcome = "cancelled" if self.cancelled else (self.code or self.error or "no outcome")
        return (
            f"#{self.index} {self.kind} {self.endpoint} {outcome} in {self.duration * 1000:.1f} ms"
        )


class RpcCallScope(Protocol):
    def attempt_started(
        self, index: int, kind: AttemptKind, target: str, metadata: Metadata
    ) -> AttemptScope | None:
        """An attempt is about to go to ``target``; ``metadata`` may be appended to."""

    def call_ended(
        self, response: object | None, error: BaseException | None, attempts: Sequence[RpcAttempt]
    ) -> None:
        """The call ended with ``response`` (a message; None for a stream) or ``error``."""


class RpcObserver(Protocol):
    def call_started(self, method: RpcMethod) -> RpcCallScope | None:
        """A call starts; return a scope to follow it, or None to ignore it."""


class RpcWatch:
    """The observers' scopes for one call: fan out to each, never let one break the call."""

    __slots__ = ("_scopes",)

    def __init__(self, observers: Sequence[RpcObserver], method: RpcMethod) -> None:
        scopes: list[RpcCallScope] = []
        for observer in observers:
            try:
                scope = observer.call_started(method)
            except Exception:
                observer_failed(observer, "call start")
                continue
            if scope is not None:
                scopes.append(scope)
        self._scopes = scopes

    def attempt_started(
        self, index: int, kind: AttemptKind, target: str, metadata: Metadata
    ) -> list[AttemptScope]:
        started: list[AttemptScope] = []
        for scope in self._scopes:
            try:
                attempt = scope.attempt_started(index, kind, target, metadata)
            except Exception:
                observer_failed(scope, "attempt start")
                continue
            if attempt is not None:
                started.append(attempt)
        return started

    @staticmethod
    def attempt_ended(scopes: Sequence[AttemptScope], attempt: RpcAttempt) -> None:
        for scope in scopes:
            try:
                scope.attempt_ended(attempt)
            except Exception:
                observer_failed(scope, "attempt end")

    def call_ended(
        self, response: object | None, error: BaseException | None, attempts: Sequence[RpcAttempt]
    ) -> None:
        for scope in self._scopes:
            try:
                scope.call_ended(response, error, attempts)
            except Exception:
                observer_failed(scope, "call end")
