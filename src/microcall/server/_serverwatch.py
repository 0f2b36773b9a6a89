"""How a server middleware talks to its observers: fan out to each, and never let one break a request."""

from __future__ import annotations

from collections.abc import Sequence

from microcall.observe.hooks import InboundRequest, ServerObserver, ServerResult, ServerScope
from microcall.observe.logs import observer_failed

_METHOD_NOT_ALLOWED = 405


class ServerWatch:
    """The observers' scopes for one inbound request.

    The middleware calls :meth:`refused` when it answers without running the
    handler, then :meth:`handler_done` and :meth:`ended` exactly once each, in
    that order.
    """

    __slots__ = ("_priority", "_refused", "_scopes")

    def __init__(self, observers: Sequence[ServerObserver], request: InboundRequest) -> None:
        scopes: list[ServerScope] = []
        for observer in observers:
            try:
                scope = observer.request_started(request)
            except Exception:
                observer_failed(observer, "request start")
                continue
            if scope is not None:
                scopes.append(scope)
        self._scopes = scopes
        self._refused: str | None = None
        self._priority: str | None = None

    def refused(self, kind: str, priority: str | None) -> None:
        """The gate answered instead of the handler (``kind``: expired, shed, malformed)."""
        self._refused = kind or None
        self._priority = None if priority is None else str(priority)

    def handler_done(self) -> None:
        # Last in, first out: scopes that made something current undo it in
        # the reverse order, as nested context managers would.
        for scope in reversed(self._scopes):
            try:
                scope.handler_done()
            except Exception:
                observer_failed(scope, "handler end")

    def ended(
        self, status: int | None, route: str | None, error: BaseException | None = None
    ) -> None:
        result = ServerResult(
            status=status,
            # A 405 matched a path but no route: Starlette names the route it
            # half-matched, aiohttp and Flask none. The same everywhere.
            route=None if status == _METHOD_NOT_ALLOWED else route,
            error=None if error is None else type(error).__name__,
            refused=self._refused,
            priority=self._priority,
        )
        for scope in self._scopes:
            try:
                scope.request_ended(result)
            except Exception:
                observer_failed(scope, "request end")
