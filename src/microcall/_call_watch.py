"""How the HTTP engine talks to its observers: fan out to each, and never let one break a call.

The observers' interface is :mod:`microcall.observe.hooks`; this is the
engine's side of it, beside the engine as gRPC's is beside its channels
(``grpc/_observe.RpcWatch``) and the servers' beside their adapters
(``server/_serverwatch.ServerWatch``).
"""

from __future__ import annotations

from collections.abc import Sequence

from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.observe.hooks import AttemptScope, CallScope, Observer
from microcall.observe.logs import observer_failed


class Watch:
    """The observers' scopes for one call."""

    __slots__ = ("_scopes",)

    def __init__(self, observers: Sequence[Observer], request: Request) -> None:
        scopes: list[CallScope] = []
        for observer in observers:
            try:
                scope = observer.call_started(request)
            except Exception:
                observer_failed(observer, "call start")
                continue
            if scope is not None:
                scopes.append(scope)
        self._scopes = scopes

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> list[AttemptScope] | None:
        """The scopes of the observers that follow this attempt; None when none does.

        (Metrics follow attempts from the call's record: with them alone,
        no attempt builds a list.)
        """
        started = None
        for scope in self._scopes:
            try:
                attempt = scope.attempt_started(index, kind, url, headers)
            except Exception:
                observer_failed(scope, "attempt start")
                continue
            if attempt is not None:
                if started is None:
                    started = [attempt]
                else:
                    started.append(attempt)
        return started

    @staticmethod
    def attempt_ended(scopes: Sequence[AttemptScope], attempt: Attempt) -> None:
        for scope in scopes:
            try:
                scope.attempt_ended(attempt)
            except Exception:
                observer_failed(scope, "attempt end")

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: Sequence[Attempt]
    ) -> None:
        for scope in self._scopes:
            try:
                scope.call_ended(response, error, attempts)
            except Exception:
                observer_failed(scope, "call end")
