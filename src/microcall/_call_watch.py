"""How the HTTP engine talks to its observers: fan out to each, and never let one break a call.

The observers' interface is :mod:`microcall.observe.hooks`; this is the
engine's side of it, beside the engine as gRPC's is beside its channels
(``grpc/_observe.RpcWatch``) and the servers' beside their adapters
(``server/_serverwatch.ServerWatch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.observe.hooks import AttemptScope, CallScope, Observer
from microcall.observe.logs import observer_failed

Watched = tuple[tuple[Observer, bool], ...]
"""Observers, each with whether its scopes are told of attempts."""


class CallWatch(Protocol):
    """What the engine holds for one call: a :class:`Watch`, or a sole observer's own scope.

    Only a :class:`Watch` is told of attempts: a sole observer follows none.
    """

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: Sequence[Attempt]
    ) -> None: ...


class Watching:
    """A client's observers, and how each call is watched with them (worked out once).

    An observer whose class says ``follows_attempts = False`` (metrics,
    which count attempts from the call's record) is never asked about an
    attempt. One that also says ``guards_itself = True`` catches and logs
    its own errors, and is called without the engine's guard: when it is
    the client's only observer, its call scope is the call's watch, and a
    call pays for no fan-out at all (docs/observability.md, "Cost").
    """

    __slots__ = ("call", "observers", "sole")

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers: Watched = tuple(
            (each, getattr(each, "follows_attempts", True)) for each in observers
        )
        self.sole: Observer | None = None
        if (
            len(observers) == 1
            and not self.observers[0][1]
            and getattr(observers[0], "guards_itself", False)
        ):
            self.sole = observers[0]
        # The watch of a call of a request, its observers told it started;
        # None if none follows it. Chosen once: a call pays for no frame of
        # this class's own.
        self.call: Callable[[Request], CallWatch | None] = (
            cast("Callable[[Request], CallWatch | None]", self.sole.call_started)
            if self.sole is not None
            else self._watch
        )

    def _watch(self, request: Request) -> Watch:
        return Watch(self.observers, request)


class Watch:
    """The observers' scopes for one call.

    ``following`` holds the scopes told of attempts, or is None when there
    are none (the engine then skips :meth:`attempt_started`). The engine
    asks only a Watch about attempts: a sole observer's scope, the other
    kind of :class:`CallWatch`, follows none.
    """

    __slots__ = ("_scopes", "following")

    def __init__(self, observers: Watched, request: Request) -> None:
        scopes: list[CallScope] = []
        following: list[CallScope] | None = None
        for observer, follows in observers:
            try:
                scope = observer.call_started(request)
            except Exception:
                observer_failed(observer, "call start")
                continue
            if scope is not None:
                scopes.append(scope)
                if follows:
                    if following is None:
                        following = [scope]
                    else:
                        following.append(scope)
        self._scopes = scopes
        self.following = following

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> list[AttemptScope] | None:
        """The attempt scopes of the observers that follow this attempt; None when none does."""
        following = self.following
        if following is None:
            return None
        started = None
        for scope in following:
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
