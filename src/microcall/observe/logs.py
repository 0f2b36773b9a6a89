"""Log lines for the events an operator must hear about, rate-limited, with structured extras.

Every line goes to the ``microcall`` logger through :func:`log_event`, which
asks a :class:`LogLimiter` first: an outage that opens a hundred breakers or
sheds a thousand requests a second writes a few lines a minute, each saying
how many like it were suppressed. Each record carries its facts as extras
(``record.microcall_event``, ``record.endpoint``, ...), for a JSON formatter
to pick up, and never a credential: endpoints are ``host:port``.

Breaker state changes and ejections are logged by every client. Budget
exhaustion and server refusals are logged by :class:`LogEvents`, an observer
to add where you want them::

    client = microcall.AsyncClient(url, observers=[LogEvents()])
    app = ASGIMiddleware(app, ServerOptions(observers=[LogEvents()]))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from yarl import URL

from microcall._attempt import Attempt, AttemptKind, RefusalReason
from microcall._request import Request
from microcall._response import Response
from microcall.errors import CallError
from microcall.observe._ratelimit import LogLimiter
from microcall.observe.hooks import InboundRequest, ServerResult

log = logging.getLogger("microcall")

DEFAULT_LIMITER = LogLimiter()
"""The limiter shared by every microcall log line unless told otherwise."""

# The refusals by a budget, among those the engine records on attempts it did
# not send (Attempt.error); an open breaker is logged by the breaker's listener.
_BUDGET_REFUSALS: dict[str, str] = {
    RefusalReason.RETRY_BUDGET: "retry_budget",
    RefusalReason.HEDGE_BUDGET: "hedge_budget",
}


def log_event(
    logger: logging.Logger,
    level: int,
    key: Hashable,
    message: str,
    *args: object,
    extra: Mapping[str, Any],
    limiter: LogLimiter | None = None,
    now: Callable[[], float] = time.monotonic,
    exc_info: bool = False,
) -> bool:
    """Log ``message % args`` unless ``key`` has logged too much lately; True if written.

    The record's extras are ``extra`` plus ``suppressed``: how many lines of
    this key were held back since the last one written. ``exc_info`` adds the
    exception being handled, as ``logger.exception`` would.
    """
    if not logger.isEnabledFor(level):
        return False
    suppressed = (limiter or DEFAULT_LIMITER).allow(key, now())
    if suppressed is None:
        return False
    if suppressed:
        message += " (%d similar lines suppressed)"
        args = (*args, suppressed)
    logger.log(level, message, *args, exc_info=exc_info, extra={**extra, "suppressed": suppressed})
    return True


def observer_failed(observer: object, where: str) -> None:
    """Log a failing observer (client or server side) with the exception being handled."""
    # A broken observer fails on every call: say so, but not a thousand times a second.
    log_event(
        log,
        logging.ERROR,
        ("observer_failed", type(observer), where),
        "observer %r failed at %s",
        observer,
        where,
        extra={"microcall_event": "observer_failed"},
        exc_info=True,
    )


class LogEvents:
    """An observer that logs budget exhaustion (client) and refused requests (server).

    Pass it in a client's ``observers=`` and in ``ServerOptions(observers=...)``.
    A refusal by the retry or hedge budget is logged at WARNING, a request
    shed by the concurrency limit at WARNING, and one refused as expired on
    arrival at INFO (it is the caller's deadline, not this server, that ran
    out). Lines are rate-limited per endpoint or priority.
    """

    __slots__ = ("_limiter", "_logger", "_now")

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        limiter: LogLimiter | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger or log
        self._limiter = limiter or DEFAULT_LIMITER
        self._now = now

    # ------------------------------------------------------------ client

    def call_started(self, request: Request) -> _CallLog:
        return _CallLog(self, request)

    def _budget_refused(self, request: Request, attempt: Attempt, reason: str) -> None:
        endpoint = request.endpoint
        log_event(
            self._logger,
            logging.WARNING,
            ("budget_exhausted", endpoint, reason),
            "%s to %s not sent: %s",
            attempt.kind,
            endpoint,
            attempt.error,
            extra={
                "microcall_event": "budget_exhausted",
                "endpoint": endpoint,
                "reason": reason,
                "attempt_kind": str(attempt.kind),
            },
            limiter=self._limiter,
            now=self._now,
        )

    # ------------------------------------------------------------ server

    def request_started(self, request: InboundRequest) -> _RequestLog:
        return _RequestLog(self)

    def _refused(self, result: ServerResult) -> None:
        refused = result.refused
        if refused == "shed":
            level, text = logging.WARNING, "shed a %s priority request: over the concurrency limit"
        elif refused == "expired":
            level, text = logging.INFO, "refused a %s priority request: its deadline had passed"
        elif refused == "deadline":
            level = logging.INFO
            text = "answered a %s priority request as expired: a call ran out of its deadline"
        else:
            return
        log_event(
            self._logger,
            level,
            (refused, result.priority),
            text,
            result.priority,
            extra={"microcall_event": refused, "priority": result.priority},
            limiter=self._limiter,
            now=self._now,
        )


class _CallLog:
    __slots__ = ("_owner", "_request")

    def __init__(self, owner: LogEvents, request: Request) -> None:
        self._owner = owner
        self._request = request

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> None:
        return None

    def call_ended(
        self, response: Response | None, error: CallError | None, attempts: Sequence[Attempt]
    ) -> None:
        for attempt in attempts:
            if not attempt.sent:
                reason = _BUDGET_REFUSALS.get(attempt.error or "")
                if reason is not None:
                    self._owner._budget_refused(self._request, attempt, reason)


class _RequestLog:
    __slots__ = ("_owner",)

    def __init__(self, owner: LogEvents) -> None:
        self._owner = owner

    def handler_done(self) -> None:
        pass

    def request_ended(self, result: ServerResult) -> None:
        if result.refused is not None:
            self._owner._refused(result)
