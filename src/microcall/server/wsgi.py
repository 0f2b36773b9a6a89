"""WSGI middleware (Flask, Django, any WSGI app; under a threaded or multi-process server).

::

    from flask import Flask
    from microcall.server import ServerOptions
    from microcall.server.wsgi import WSGIMiddleware

    app = Flask(__name__)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, ServerOptions(default_timeout=5.0))

The request's deadline and priority are set in the worker thread's context
while the application runs, so a ``microcall.Client`` or ``FuturesClient``
call made from the view inherits them (those clients carry the calling
thread's context into their event loop). The context is restored when the
application returns; a body produced lazily afterwards (a streamed generator)
no longer sees it. The request's concurrency permit is held until the server
closes the response, since the thread is busy until then.

A thread cannot be cancelled, so ``cancel_on_deadline`` is refused here:
check ``microcall.current_deadline()`` in long loops instead.

A ``microcall.DeadlineExceeded`` that escapes the application once the
request's deadline has run out is answered as an expired request (408,
``X-Do-Not-Retry: 1``). Flask, like most frameworks, catches a view's
exception itself and answers 500; register
:meth:`WSGIMiddleware.deadline_exceeded` as its error handler for it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from microcall.errors import ConfigurationError
from microcall.observe.hooks import InboundRequest
from microcall.server._admission import Admission, current_admission
from microcall.server._config import ServerOptions
from microcall.server._gate import Gate, GateReadings, Refusal
from microcall.server._route_labels import wsgi_route
from microcall.server._serverwatch import ServerWatch
from microcall.server._stats import ServerStats
from microcall.server._trust import Caller

__all__ = ["WSGIApp", "WSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# The header names as a WSGI environ spells them (PEP 3333: HTTP_ + upper case).
_TIMEOUT = "HTTP_X_REQUEST_TIMEOUT"
_PRIORITY = "HTTP_X_REQUEST_PRIORITY"


class WSGIMiddleware(GateReadings):
    """Wraps a WSGI application: ``WSGIMiddleware(app, options)``."""

    __slots__ = ("_gate", "_observers", "app")
    _gate: Gate

    def __init__(
        self,
        app: WSGIApp,
        options: ServerOptions | None = None,
        *,
        stats: ServerStats | None = None,
    ) -> None:
        if options is not None and options.cancel_on_deadline:
            raise ConfigurationError(
                "cancel_on_deadline needs an async handler; a WSGI thread cannot be cancelled"
            )
        self.app = app
        self._gate = Gate(options, stats=stats)
        self._observers = self._gate.options.observers

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._observers:
            return self._observed(environ, start_response)
        return self._serve(environ, start_response, None)

    def _observed(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        watch = ServerWatch(
            self._observers,
            InboundRequest(
                protocol="http",
                method=environ.get("REQUEST_METHOD", ""),
                path=environ.get("PATH_INFO", ""),
                scheme=environ.get("wsgi.url_scheme", "http"),
                header=partial(_header, environ),
            ),
        )
        started = _StartResponse(start_response, environ)
        try:
            body = self._serve(environ, started, watch)
        except BaseException as exc:
            watch.handler_done()
            watch.ended(started.status, started.route, exc)
            raise
        watch.handler_done()
        return _ObservedBody(body, watch, started)

    def _serve(
        self, environ: Environ, start_response: StartResponse, watch: ServerWatch | None
    ) -> Iterable[bytes]:
        # A WSGI server joins a repeated header into one value with commas,
        # which the parser refuses like any other repetition.
        timeout = environ.get(_TIMEOUT)
        priority = environ.get(_PRIORITY)
        outcome = self._gate.admit(
            () if timeout is None else (timeout,),
            () if priority is None else (priority,),
            partial(_caller, environ),
        )
        if isinstance(outcome, Refusal):
            if watch is not None:
                watch.refused(outcome.kind, outcome.priority)
            start_response(f"{outcome.status} {outcome.reason}", list(outcome.headers))
            return [outcome.body]
        outcome.enter()
        try:
            body = self.app(environ, start_response)
        except BaseException as exc:
            refusal = self._gate.ran_out(outcome, exc)
            if refusal is None:
                outcome.fail()
                raise
            # exc_info: the application may have started its own response.
            _answer(refusal, environ, start_response, sys.exc_info())
            body = [refusal.body]
        finally:
            outcome.leave()
        if outcome.ran_out and watch is not None:
            watch.refused("deadline", outcome.priority)
        return _Body(body, outcome)

    def deadline_exceeded(self, error: BaseException) -> WSGIApp:
        """A framework's error handler for ``microcall.DeadlineExceeded``.

        Frameworks such as Flask turn an exception from a view into their own
        500 (and log it) before it reaches the middleware. Register this to
        answer a call that ran out of the request's deadline as an expired
        request instead (408, ``X-Do-Not-Retry: 1``, counted)::

            app.register_error_handler(microcall.DeadlineExceeded, protect.deadline_exceeded)

        It returns a WSGI application for the framework to run as the
        response. An error that is not the request's deadline running out
        (the view's own shorter timeout) is re-raised, for the framework to
        treat as it would have.
        """
        admission = current_admission()
        refusal = None if admission is None else self._gate.ran_out(admission, error)
        if refusal is None:
            raise error
        return partial(_answer, refusal)


class _Body:
    """The application's response, finishing the admission when the server closes it."""

    __slots__ = ("_admission", "_body")

    def __init__(self, body: Iterable[bytes], admission: Admission) -> None:
        self._body = body
        self._admission: Admission | None = admission

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            admission, self._admission = self._admission, None
            if admission is not None:
                admission.finish()

    def __del__(self) -> None:
        # A server that never closed the body: werkzeug drains the request
        # before it calls close(), and a client that reset the connection
        # makes that read raise, so close() never comes. The slot would stay
        # taken for good (a few impatient clients, and every later request
        # shed): it is given back as the body is collected.
        if self._admission is not None:
            self.close()


class _StartResponse:
    """``start_response`` that keeps the status, and the route while the framework still knows it."""

    __slots__ = ("_environ", "_start_response", "route", "status")

    def __init__(self, start_response: StartResponse, environ: Environ) -> None:
        self._start_response = start_response
        self._environ = environ
        self.status: int | None = None
        self.route: str | None = None

    def __call__(self, status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        try:
            self.status = int(status[:3])
        except ValueError:
            self.status = None
        self.route = wsgi_route(self._environ)
        return self._start_response(status, headers, *args)


class _ObservedBody:
    """The response body; tells the observers the request ended when the server closes it."""

    __slots__ = ("_body", "_started", "_watch")

    def __init__(self, body: Iterable[bytes], watch: ServerWatch, started: _StartResponse) -> None:
        self._body = body
        self._watch: ServerWatch | None = watch
        self._started = started

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.ended(self._started.status, self._started.route)

    def __del__(self) -> None:
        if self._watch is not None:  # never closed: see _Body.__del__
            self.close()


def _answer(
    refusal: Refusal, environ: Environ, start_response: StartResponse, exc_info: Any = None
) -> Iterable[bytes]:
    start_response(f"{refusal.status} {refusal.reason}", list(refusal.headers), exc_info)
    return [refusal.body]


def _header(environ: Environ, name: str) -> str | None:
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return value if isinstance(value, str) else None


def _caller(environ: Environ) -> Caller:
    address = environ.get("REMOTE_ADDR")
    return Caller(
        address if isinstance(address, str) and address else None,
        partial(_header, environ),
        environ,
    )
