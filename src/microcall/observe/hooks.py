"""The observer interface: how metrics and traces see calls and attempts.

One small protocol underneath every backend (Prometheus, OpenTelemetry, a
test's recorder): the engine tells each observer when a call starts, when
each attempt starts and ends, and when the call ends. An observer returns a
scope object for each, so it can keep its own state (a start time, a span)
without the engine knowing what it is.

::

    class Observer(Protocol):
        def call_started(self, request) -> CallScope | None

    class CallScope(Protocol):
        def attempt_started(self, index, kind, url, headers) -> AttemptScope | None
        def call_ended(self, response, error, attempts) -> None

    class AttemptScope(Protocol):
        def attempt_ended(self, attempt) -> None

``headers`` is the attempt's outgoing header dict: a tracer adds
``traceparent`` there. ``attempts`` at the end includes the attempts that were
refused (``sent=False``: retry budget, breaker), so budget refusals are
counted from it. Breaker state changes and ejections are events on the
client's replica group (``client.replicas.breaker_events`` /
``ejection_events``, lists of callables): an observer with a ``watch(replicas)``
method is handed each client's replica group when the client is built, and
subscribes there.

With no observers configured the engine skips all of this: it costs one
attribute check per call.

Observers run inside the call, on the event loop: keep them cheap and never
let them raise (an exception from an observer is logged and dropped). An
observer whose class says ``thread_safe = True`` may also be called from
several threads at once: a blocking ``Client`` then runs its plain calls
in the calling thread (docs/clients.md), and calls it there. Without it, a
Client's calls all stay on its loop, and the observer on one thread.

Two more class attributes let an observer cost a call less. One whose
class says ``follows_attempts = False`` reads attempts from the call's
record at its end, and is never told of them as they start (its scope's
``attempt_started`` is not called). One that also says ``guards_itself =
True`` catches and logs its own errors (``observe.logs.observer_failed``):
as a client's only observer, its call scope is then the call's watch, with
no fan-out around it. ``ClientMetrics`` says both.

The server side mirrors it. A server middleware (aiohttp, ASGI, WSGI, or a
gRPC interceptor) tells each :class:`ServerObserver` that a request arrived,
before admission, with an :class:`InboundRequest` event; the scope it returns
hears when the handler is done (the point to undo whatever the scope made
current, such as a span) and when the request ended, with a
:class:`ServerResult` event::

    class ServerObserver(Protocol):
        def request_started(self, request: InboundRequest) -> ServerScope | None

    class ServerScope(Protocol):
        def handler_done(self) -> None
        def request_ended(self, result: ServerResult) -> None

``request_started`` runs in the context the handler runs in (its task, or
its WSGI worker thread), so a tracer may make the request's span current
there; ``handler_done`` runs in that same context. A refused request (expired
on arrival, shed) still gets both calls, and its result says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response


class AttemptScope(Protocol):
    def attempt_ended(self, attempt: Attempt) -> None:
        """The attempt ended (answered, failed, or was cancelled: see ``attempt``)."""


class CallScope(Protocol):
    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> AttemptScope | None:
        """An attempt is about to be sent to ``url``; ``headers`` may be added to."""

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: Sequence[Attempt]
    ) -> None:
        """The call ended with ``response`` or ``error`` after ``attempts``.

        ``error`` is a CallError, or CancelledError when the caller gave up
        (``attempts`` may then be empty).
        """


class Observer(Protocol):
    def call_started(self, request: Request) -> CallScope | None:
        """A logical call starts; return a scope to follow it, or None to ignore it."""


# ---------------------------------------------------------------- server side

HeaderLookup = Callable[[str], str | None]
"""``lookup(name)``: an inbound header's value (case-insensitive name), or None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundRequest:
    """An event: a request arrived at a server middleware (before admission).

    ``protocol`` is ``"http"`` or ``"grpc"``. ``method`` is the HTTP method as
    received (not validated: an observer bounds it), or the gRPC method's full
    name (``/package.Service/Method``). ``path`` is the request path without
    its query string. ``header`` looks up inbound headers (gRPC: metadata) for
    trace propagation; observers must never record what it returns.
    """

    protocol: str
    method: str
    path: str
    scheme: str
    header: HeaderLookup


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerResult:
    """An event: a request ended (its answer is sent, or the handler raised).

    ``status`` is the HTTP status (gRPC: the numeric status code), None when
    the handler raised before answering. ``route`` is the route template that
    matched (``/books/{id}``; gRPC: the full method name), None when no route
    matched: never the raw path. ``error`` names the exception that escaped
    the handler (its class name), if any. ``refused`` says why the request
    was answered without running the handler (``"expired"``, ``"shed"`` or
    ``"malformed"``) or in its place (``"deadline"``: a call it made ran out
    of the request's deadline), and ``priority`` is the priority it was
    refused at.
    """

    status: int | None
    route: str | None = None
    error: str | None = None
    refused: str | None = None
    priority: str | None = None


class ServerScope(Protocol):
    def handler_done(self) -> None:
        """The handler returned or raised (its body may still be streaming): restore context."""

    def request_ended(self, result: ServerResult) -> None:
        """The request ended as ``result`` says."""


class ServerObserver(Protocol):
    def request_started(self, request: InboundRequest) -> ServerScope | None:
        """A request arrived; return a scope to follow it, or None to ignore it."""
