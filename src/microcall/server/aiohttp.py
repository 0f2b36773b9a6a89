"""aiohttp server middleware: inbound deadline and priority, expired-work refusal, shedding.

::

    from aiohttp import web
    from microcall.server import ServerOptions, Shedding, GradientLimit
    from microcall.server.aiohttp import AiohttpMiddleware

    protect = AiohttpMiddleware(ServerOptions(shedding=Shedding(limit=GradientLimit())))
    app = web.Application(middlewares=[protect])
    ...
    protect.stats.snapshot()   # admitted, expired, shed_low, ...

Inside a handler, ``microcall.current_deadline()`` and
``microcall.current_priority()`` are the request's, and every microcall
client call made there inherits them. A ``microcall.DeadlineExceeded`` that
escapes the handler once the request's deadline has run out is answered as
an expired request (408, ``X-Do-Not-Retry: 1``), not aiohttp's 504. A route's ``@default_timeout`` is read
from the matched handler (for a class-based view, from the method) before
the handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import ClassVar

from aiohttp import web

from microcall._wire import PRIORITY_HEADER, TIMEOUT_HEADER
from microcall.observe.hooks import InboundRequest
from microcall.server._cancel import DeadlineCancelled, within_deadline
from microcall.server._config import ServerOptions
from microcall.server._gate import Gate, GateReadings, Refusal
from microcall.server._route_labels import aiohttp_route
from microcall.server._route_timeout import route_timeout_of
from microcall.server._serverwatch import ServerWatch
from microcall.server._stats import ServerStats
from microcall.server._trust import Caller

__all__ = ["AiohttpMiddleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AiohttpMiddleware(GateReadings):
    """An aiohttp middleware (pass the instance in ``web.Application(middlewares=[...])``).

    One instance per application: it owns the concurrency limit and the stats.
    """

    __slots__ = ("_cancel", "_gate", "_observers")
    _gate: Gate

    # aiohttp takes a middleware without this marker for the old factory style.
    __middleware_version__: ClassVar[int] = 1

    def __init__(
        self, options: ServerOptions | None = None, *, stats: ServerStats | None = None
    ) -> None:
        self._gate = Gate(options, stats=stats)
        self._cancel = self._gate.options.cancel_on_deadline
        self._observers = self._gate.options.observers

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._observers:
            return await self._observed(request, handler)
        return await self._serve(request, handler, None)

    async def _observed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        watch = ServerWatch(
            self._observers,
            InboundRequest(
                protocol="http",
                method=request.method,
                path=request.path,
                scheme=request.scheme,
                header=request.headers.get,
            ),
        )
        try:
            response = await self._serve(request, handler, watch)
        except BaseException as exc:
            watch.handler_done()
            if isinstance(exc, web.HTTPException):  # an answer, raised
                watch.ended(exc.status, aiohttp_route(request))
            else:
                watch.ended(None, aiohttp_route(request), exc)
            raise
        watch.handler_done()
        watch.ended(response.status, aiohttp_route(request))
        return response

    async def _serve(
        self, request: web.Request, handler: Handler, watch: ServerWatch | None
    ) -> web.StreamResponse:
        headers = request.headers
        outcome = self._gate.admit(
            headers.getall(TIMEOUT_HEADER, ()),
            headers.getall(PRIORITY_HEADER, ()),
            partial(_caller, request),
            _route_timeout(request),
        )
        if isinstance(outcome, Refusal):
            if watch is not None:
                watch.refused(outcome.kind, outcome.priority)
            return _respond(request, outcome)
        outcome.enter()
        try:
            if self._cancel:
                response = await within_deadline(outcome, handler(request))
            else:
                response = await handler(request)
        except DeadlineCancelled:
            self._gate.stats.add("cancelled")
            outcome.finish(cancelled=True)
            return _respond(request, self._gate.expired_refusal)
        except web.HTTPException:
            outcome.finish()  # a raised 404 or redirect is an answer like any other
            raise
        except BaseException as exc:
            refusal = self._gate.ran_out(outcome, exc)
            if refusal is None:
                outcome.fail()
                raise
            outcome.finish()
            if watch is not None:
                watch.refused(refusal.kind, refusal.priority)
            return _respond(request, refusal)
        finally:
            outcome.leave()
        outcome.finish()
        return response


def _respond(request: web.Request, refusal: Refusal) -> web.Response:
    """The refusal as the answer; or, when the handler's own answer has started, no answer.

    Half a response cannot become a 408 (aiohttp would write it inside the
    started body, and the client would read it as the body's end): the
    connection is closed instead, as the ASGI middleware does. The refusal
    is still returned, for aiohttp to find it cannot be written (which it
    takes quietly, as a client that went away).
    """
    writer = request.writer
    if writer.output_size or writer.buffer_size:
        transport = request.transport
        if transport is not None:
            transport.close()
    return web.Response(
        status=refusal.status, reason=refusal.reason, headers=refusal.headers, body=refusal.body
    )


def _route_timeout(request: web.Request) -> float | None:
    handler = request.match_info.handler
    value = route_timeout_of(handler)
    if value is None and isinstance(handler, type) and issubclass(handler, web.View):
        value = route_timeout_of(getattr(handler, request.method.lower(), None))
    return value


def _caller(request: web.Request) -> Caller:
    def header(name: str) -> str | None:
        values = request.headers.getall(name, ())
        return values[0] if len(values) == 1 else None

    return Caller(request.remote, header, request)
