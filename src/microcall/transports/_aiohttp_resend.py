"""The one resend an attempt may make: on a fresh connection, when a reused one was already dead.

Theory of operation. A server closes an idle keep-alive connection when it
likes (nginx's ``keepalive_timeout``, a load balancer's idle timeout, uvicorn
after it answered 500, a server that closes after every answer). A request
written on such a connection while the close is on its way finds the
connection gone before any byte of a response arrives: the server never saw
it. Every mature client resends it on a new connection (Go's
``net/http``, urllib3, aiohttp itself); microcall does too, once, inside the
same attempt and under its timeout, without spending retry budget, when

- the connection was *reused* (a new connection that fails is the server's
  answer, and the strategy's business), and
- no byte of the response had arrived, and
- the request may be sent twice (``Request.replayable``: idempotent methods,
  or a POST the caller opted in), or none of its bytes had been written.

Otherwise one attempt is one request on the wire, and a POST is never sent
twice. aiohttp's own resend (``ClientSession._request`` sends an idempotent
request again after ``ClientOSError`` or ``ServerDisconnectedError``, on
whatever connection the pool gives next, uncounted) is kept off by the
middleware below: it lets neither exception out, but wraps it in
``ConnectionDropped``, which aiohttp passes through as it is.

How each condition is known, from aiohttp's public surface:

- reused: ``FreshConnector.connect`` remembers the connections (their
  protocol objects, weakly) it has handed out; one handed out again is reused.
- no response byte: ``ServerDisconnectedError`` carries the partly parsed
  response as its ``message`` when some of it arrived, and its default text
  when none did. A ``ClientOSError`` (a reset, say) cannot tell; a reset
  after part of a response is a broken server rather than a stale
  connection, and only replayable requests are resent after one.
- no request byte written: ``ClientConnectionResetError`` is what aiohttp's
  writer raises when the transport was already closing at the first write.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest, ClientResponse
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

Handler = Callable[["ClientRequest"], Awaitable["ClientResponse"]]


class ConnectionDropped(aiohttp.ClientConnectionError):
    """aiohttp's error for a connection that failed, and whether the request was resent.

    A ``ClientConnectionError`` that is neither ``ClientOSError`` nor
    ``ServerDisconnectedError``: aiohttp lets it out without a resend of its own.
    """

    def __init__(self, error: aiohttp.ClientError, *, resent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.resent = resent


def worth_resending(error: BaseException, replayable: bool) -> bool:
    """Whether ``error``, on a reused connection, says the server never saw the request."""
    if isinstance(error, aiohttp.ClientConnectionResetError):
        return True  # the connection was closing before a byte of the request was written
    if not replayable:
        return False
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return isinstance(error.message, str)  # no part of a response arrived
    return isinstance(error, aiohttp.ClientOSError) and not isinstance(
        error, aiohttp.ClientConnectorError
    )


class FreshConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that knows a reused connection from a new one, and can refuse reused ones.

    ``reused`` holds the requests in flight that were given a reused
    connection (the middleware takes them out); ``connect`` for a request in
    ``fresh_for`` closes pooled connections until it has a new one.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()
        self.reused: set[ClientRequest] = set()
        self.fresh_for: set[ClientRequest] = set()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        handed_out = self._handed_out
        if conn.protocol not in handed_out:
            handed_out.add(conn.protocol)  # type: ignore[arg-type]
        elif self.fresh_for and req in self.fresh_for:
            # The pool's other idle connections to this host are as old as the
            # dead one: close them rather than risk the resend on one. Bounded:
            # each pass takes one connection out of the pool.
            while conn.protocol in handed_out:
                conn.close()
                conn = await super().connect(req, traces, timeout)
            handed_out.add(conn.protocol)  # type: ignore[arg-type]
        else:
            self.reused.add(req)
        return conn


class Resender:
    """The aiohttp client middlewares that resend on a fresh connection (see the module's theory).

    ``replayable`` and ``once`` are the middleware tuples for requests that
    may and may not be sent twice; ``resent`` holds the responses that took a
    resend to get (weakly, until the transport looks).
    """

    def __init__(self, connector: FreshConnector) -> None:
        self._connector = connector
        self.resent: weakref.WeakSet[ClientResponse] = weakref.WeakSet()

        async def replayable(req: ClientRequest, handler: Handler) -> ClientResponse:
            return await self._send(req, handler, True)

        async def once(req: ClientRequest, handler: Handler) -> ClientResponse:
            return await self._send(req, handler, False)

        self.replayable = (replayable,)
        self.once = (once,)

    async def _send(self, req: ClientRequest, handler: Handler, replayable: bool) -> ClientResponse:
        reused_set = self._connector.reused
        try:
            return await handler(req)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as error:
            reused = req in reused_set
            if not (reused and worth_resending(error, replayable)):
                raise ConnectionDropped(error, resent=False) from error
        except aiohttp.ClientConnectionResetError:
            if req not in reused_set:
                raise
        finally:
            reused_set.discard(req)
        return await self._resend(req, handler)

    async def _resend(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        fresh_for = self._connector.fresh_for
        fresh_for.add(req)
        try:
            response = await handler(req)
        except aiohttp.ClientError as error:
            raise ConnectionDropped(error, resent=True) from error
        finally:
            fresh_for.discard(req)
        self.resent.add(response)
        return response
