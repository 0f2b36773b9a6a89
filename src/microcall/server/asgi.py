"""ASGI middleware (pure ASGI: FastAPI, Starlette, any ASGI app; served by uvicorn and others).

::

    from fastapi import FastAPI
    from microcall.server import ServerOptions, trust_networks
    from microcall.server.asgi import ASGIMiddleware

    app = FastAPI()
    app.add_middleware(ASGIMiddleware, options=ServerOptions(trust=trust_networks("10.0.0.0/8")))

or wrap any ASGI application: ``app = ASGIMiddleware(app, options)``. With
``add_middleware`` the framework builds the instance when the first request
arrives, so to read the counters pass your own: ``stats = ServerStats()`` and
``app.add_middleware(ASGIMiddleware, options=..., stats=stats)``.

Only ``http`` scopes are gated; ``lifespan`` and ``websocket`` pass through.
Everything the handler runs (async endpoints, and plain ones FastAPI runs in
its thread pool with a copy of the context) sees the request's deadline and
priority. A ``microcall.DeadlineExceeded`` that escapes the application once
the request's deadline has run out is answered as an expired request (408,
``X-Do-Not-Retry: 1``) with no traceback. Starlette answers an unhandled
error with a 500 in its outermost layer before re-raising it, so install the
middleware inside it (``add_middleware``) for that answer to be the 408.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from microcall.observe._routes import asgi_route, routed_app
from microcall.observe._serverwatch import ServerWatch
from microcall.observe.hooks import InboundRequest
from microcall.server._cancel import DeadlineCancelled, within_deadline
from microcall.server._config import ServerOptions
from microcall.server._gate import Gate, GateReadings, Refusal
from microcall.server._stats import ServerStats
from microcall.server._trust import Caller

__all__ = ["ASGIApp", "ASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# ASGI servers give header names in lower case (ASGI spec, "HTTP" scope).
_TIMEOUT = b"x-request-timeout"
_PRIORITY = b"x-request-priority"


class ASGIMiddleware(GateReadings):
    """Wraps an ASGI application: ``ASGIMiddleware(app, options)``."""

    __slots__ = ("_cancel", "_gate", "_observers", "_routed", "app")
    _gate: Gate

    def __init__(
        self,
        app: ASGIApp,
        options: ServerOptions | None = None,
        *,
        stats: ServerStats | None = None,
    ) -> None:
        self.app = app
        # Wrapped from outside (``ASGIMiddleware(app)``), the middleware sees a
        # request before the application has put itself in the scope; the
        # routes it mounts are then found from the application given here.
        self._routed = routed_app(app)
        self._gate = Gate(options, stats=stats)
        self._cancel = self._gate.options.cancel_on_deadline
        self._observers = self._gate.options.observers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._observers:
            await self._observed(scope, receive, send)
            return
        await self._serve(scope, receive, send, None)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = ServerWatch(
            self._observers,
            InboundRequest(
                protocol="http",
                method=scope["method"],
                path=scope.get("path", ""),
                scheme=scope.get("scheme", "http"),
                header=partial(_header, scope),
            ),
        )
        status = _Status(send)
        # The outermost application: mounted ones replace it in the scope.
        app = scope.get("app") or self._routed
        try:
            await self._serve(scope, receive, status, watch)
        except BaseException as exc:
            watch.handler_done()
            watch.ended(status.status, asgi_route(scope, app), exc)
            raise
        watch.handler_done()
        watch.ended(status.status, asgi_route(scope, app))

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, watch: ServerWatch | None
    ) -> None:
        timeouts: list[str] = []
        priorities: list[str] = []
        for name, value in scope["headers"]:
            if name == _TIMEOUT:
                timeouts.append(value.decode("latin-1"))
            elif name == _PRIORITY:
                priorities.append(value.decode("latin-1"))
        outcome = self._gate.admit(timeouts, priorities, partial(_caller, scope))
        if isinstance(outcome, Refusal):
            if watch is not None:
                watch.refused(outcome.kind, outcome.priority)
            await _respond(send, outcome)
            return
        started = _Started(send)
        outcome.enter()
        try:
            if self._cancel:
                await within_deadline(outcome, self.app(scope, receive, started))
            else:
                await self.app(scope, receive, started)
        except DeadlineCancelled:
            self._gate.stats.add("cancelled")
            outcome.finish(cancelled=True)
            if not started.started:
                await _respond(send, self._gate.expired_refusal)
            # Otherwise the response is half sent: returning without its end
            # makes the server close the connection, the only honest ending.
            return
        except BaseException as exc:
            refusal = self._gate.ran_out(outcome, exc)
            if refusal is None:
                outcome.fail()
                raise
            outcome.finish()
            if watch is not None:
                watch.refused(refusal.kind, refusal.priority)
            # An application that answers errors itself before re-raising
            # (Starlette's outermost ServerErrorMiddleware sends a 500) has
            # already started its response; the error is still counted and
            # not re-raised, so the server logs no traceback for it.
            if not started.started:
                await _respond(send, refusal)
            return
        finally:
            outcome.leave()
        outcome.finish()


class _Started:
    """A ``send`` that remembers whether the response has begun."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class _Status:
    """A ``send`` that remembers the status of the response it started."""

    __slots__ = ("_send", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


async def _respond(send: Send, refusal: Refusal) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in refusal.headers
            ],
        }
    )
    await send({"type": "http.response.body", "body": refusal.body})


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    found = [value for key, value in scope["headers"] if key == wanted]
    return found[0].decode("latin-1") if len(found) == 1 else None


def _caller(scope: Scope) -> Caller:
    client = scope.get("client")
    return Caller(None if not client else str(client[0]), partial(_header, scope), scope)
