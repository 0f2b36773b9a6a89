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
- a streamed body read once (``microcall._body``) goes again only while no
  chunk of it was taken: its payload says ``spent`` once one was (aiohttp
  holds the head back to send it with the first chunk, so even a reset at
  the first write may come after one).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest, ClientResponse, ConnectionKey
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

Handler = Callable[["ClientRequest"], Awaitable["ClientResponse"]]
Middleware = Callable[["ClientRequest", Handler], Awaitable["ClientResponse"]]


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
    ``fresh_for`` closes pooled connections until it has a new one. A
    connection closed with request bytes still unsent (an upload cut short)
    is aborted rather than left to flush to a server that may never read.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Weak references to the connections (their protocol objects) handed
        # out so far. A set of plain refs rather than a WeakSet: weakref.ref()
        # returns an object's one shared ref, so a lookup costs ~100 ns where
        # WeakSet.__contains__ costs ~350 ns, on every request.
        self._handed_out: set[weakref.ref[ResponseHandler]] = set()
        self._pruned_at = _PRUNE_FROM
        self.reused: set[ClientRequest] = set()
        self.fresh_for: set[ClientRequest] = set()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        handed_out = self._handed_out
        if weakref.ref(conn.protocol) not in handed_out:
            self._remember(conn)
        elif self.fresh_for and req in self.fresh_for:
            # The pool's other idle connections to this host are as old as the
            # dead one: close them rather than risk the resend on one. Bounded:
            # each pass takes one connection out of the pool.
            while weakref.ref(conn.protocol) in handed_out:
                conn.close()
                conn = await super().connect(req, traces, timeout)
            self._remember(conn)
        else:
            self.reused.add(req)
        return conn

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        transport = protocol.transport
        if (
            transport is not None
            and transport.get_write_buffer_size()
            and (should_close or protocol.should_close or self.force_close)
        ):
            # Bytes of a cut upload the server never read: the close() aiohttp
            # makes would wait for them for ever if it never reads again.
            protocol.abort()
        super()._release(key, protocol, should_close=should_close)

    def _remember(self, conn: Connection) -> None:
        handed_out = self._handed_out
        handed_out.add(weakref.ref(conn.protocol))  # type: ignore[arg-type]
        if len(handed_out) >= self._pruned_at:
            handed_out.difference_update([ref for ref in handed_out if ref() is None])
            self._pruned_at = max(_PRUNE_FROM, 2 * len(handed_out))


# The set of connections handed out is pruned of closed ones when it doubles.
_PRUNE_FROM = 64


def resending(
    connector: FreshConnector, resent: set[weakref.ref[ClientResponse]], replayable: bool
) -> Middleware:
    """The aiohttp client middleware that resends on a fresh connection (see the module's theory).

    ``replayable`` says whether the requests it is given may be sent twice;
    responses that took a resend are added to ``resent``.
    """
    reused = connector.reused
    fresh_for = connector.fresh_for

    async def middleware(req: ClientRequest, handler: Handler) -> ClientResponse:
        try:
            return await handler(req)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as error:
            if not (req in reused and worth_resending(error, replayable)) or _spent(req):
                raise ConnectionDropped(error, resent=False) from error
        except aiohttp.ClientConnectionResetError:
            if req not in reused or _spent(req):
                raise
        finally:
            reused.discard(req)
        fresh_for.add(req)
        try:
            response = await handler(req)
        except aiohttp.ClientError as error:
            raise ConnectionDropped(error, resent=True) from error
        finally:
            fresh_for.discard(req)
        # The ref leaves the set by itself if the transport never looks.
        resent.add(weakref.ref(response, resent.discard))
        return response

    return middleware


def _spent(req: ClientRequest) -> bool:
    """Whether the request's body was read once already and cannot go again."""
    return bool(getattr(req.body, "spent", False))


class Resender:
    """The middlewares a session passes per request: ``replayable`` or ``once``.

    ``resent`` holds weak references to the responses that took a resend to
    get, until the transport takes them out (``took_resend``). A plain set:
    its emptiness, checked on every request, costs ~20 ns against ~110 ns for
    a WeakSet's.
    """

    def __init__(self, connector: FreshConnector) -> None:
        self.resent: set[weakref.ref[ClientResponse]] = set()
        self.replayable = (resending(connector, self.resent, True),)
        self.once = (resending(connector, self.resent, False),)

    def took_resend(self, response: ClientResponse) -> bool:
        """Whether ``response`` took a resend to get (each is reported once)."""
        resent = self.resent
        if not resent:
            return False
        ref = weakref.ref(response)
        if ref not in resent:
            return False
        resent.discard(ref)
        return True
