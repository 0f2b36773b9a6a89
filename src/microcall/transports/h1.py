"""microcall's own HTTP/1.1 transport: llhttp (httptools) and asyncio protocols, near the floor.

Theory of operation. aiohttp spends most of a call's CPU in its own Python
(request and response objects, the connector, tracing hooks, the stream
reader); a keep-alive client on llhttp and ``asyncio.Protocol`` costs about a
third of it, and on uvloop a ninth (docs/transports.md has the figures).
This transport is that client, made whole:

- ``_h1_wire``: the bytes, without I/O: the request head, and a response
  state machine over llhttp (framing, 1xx, HEAD/204/304, read to the close,
  bytes past the message, the head and body caps);
- ``_h1_conn``: one connection as an asyncio protocol, one request at a time,
  writing a streamed body (``microcall._body``) as its source gives it and
  the socket takes it, chunked when its length is unknown;
- ``_h1_pool``: idle connections per origin, ``Limits``, expiry;
- ``_h1_stream``: a streamed response's body, read as it arrives;
- here: the attempt, under the coalesced timer of ``microcall._timeouts``;
  the resend on a fresh connection of a request whose reused connection
  was already dead (the rule of ``_aiohttp_resend``, with the same record:
  ``Response.resent`` and the error's flag); TLS through the loop;
- ``_h1_redirect``: the redirects, without I/O; ``_h1_errors``: the one
  place errors become microcall's;
- ``_h1_proxy``: the way through a forward proxy (``proxy=``,
  ``trust_env=``): absolute-form requests, CONNECT tunnels;
- ``_h1_direct``: the same exchange on blocking sockets in the caller's
  thread, for a blocking Client's plain calls (``direct``).

A streamed request (``Request.stream``) returns at the response's head: the
attempt's timer covers the head, and the body, with its connection, is
handed on as an ``H1Body`` (a body that had arrived whole with its head is
handed on in memory, and its connection released at once). A redirect's
body is never read: its connection is released if the body came with the
head, else closed.

A request body read once (``microcall._body``) is never sent twice: not by the resend (unless no
chunk of it was taken) and not after a 307/308 redirect (a RedirectError).

A cancelled attempt (a losing hedge, its timeout) closes its connection:
the server sees the close and stops. The pool belongs to the loop that
opened it; a client used from a new loop opens a new pool, and the old one
is closed as its loop shuts down (``_loops``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, Mapping

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall._attempt import mark_resent
from microcall._body import Body, BodySend, may_resend
from microcall._limits import Limits
from microcall._request import Request, endpoint_of
from microcall._response import Response
from microcall._stream import AsyncStreamResponse, BufferedBody
from microcall._timeouts import Timeouts
from microcall.errors import UsageError
from microcall.transports._h1_conn import ConnectionLost, H1Connection, Origin, worth_resending
from microcall.transports._h1_direct import DIRECT_BODY_MAX, DirectPool
from microcall.transports._h1_errors import AtHop, ConnectFailed, Resent, map_error
from microcall.transports._h1_pool import Pool
from microcall.transports._h1_proxy import absolute_target, connect_plain, open_tunnel
from microcall.transports._h1_redirect import REDIRECT_STATUSES, Hop, location_of, next_hop
from microcall.transports._h1_stream import H1Body
from microcall.transports._h1_wire import ResponseReader, decoded, request_head, whole_response
from microcall.transports._loops import refuse_if_running, start_guard, stop_guard
from microcall.transports._proxy import Proxy, ProxyFailed
from microcall.transports._settings import checked_proxy, checked_settings

# What a blocking Client's direct calls use of this transport (client/_direct).
__all__ = ["DIRECT_BODY_MAX", "DirectPool", "H1Transport"]

# An exchange's outcome: the response's reader, whether it took the resend,
# and, for a streamed response whose body is still coming, its connection.
_Exchanged = tuple[ResponseReader, bool, H1Connection | None]

_NO_ORIGIN = Origin("", "", 0, None)

# The statuses after which the request may go on: a redirect, a proxy's 407.
_HOP_STATUSES = REDIRECT_STATUSES | {407}


class H1Transport:
    """HTTP/1.1 over llhttp and asyncio protocols, with a keep-alive pool shared by every call of a client.

    ::

        from microcall.transports.h1 import H1Transport

        transport = H1Transport(limits=microcall.Limits(max_connections=20))
        async with microcall.AsyncClient("http://catalog:8080", transport=transport) as client:
            ...

    The options are those of ``AiohttpTransport``: ``limits`` (every field
    applies), ``verify`` (True: the system's CAs; False; or an
    ``ssl.SSLContext`` used as given), ``follow_redirects``, and ``proxy``
    (an ``http://`` forward proxy, user-info for its credentials) and
    ``trust_env`` (the environment's ``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``): docs/proxies.md.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        verify: bool | ssl.SSLContext = True,
        follow_redirects: bool = True,
        proxy: str | URL | None = None,
        trust_env: bool = False,
    ) -> None:
        self._limits = checked_settings(limits, verify, follow_redirects)
        self._proxies = checked_proxy(proxy, trust_env)
        self._verify = verify
        self._ssl: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) else None
        self._follow_redirects = follow_redirects
        self._pool: Pool | None = None
        self._timeouts: Timeouts | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        self._closed = False
        # The URL of the last attempt sent direct, with its Host, request
        # target and pool key (``_exchange``).
        self._last: tuple[URL | None, str, str, Origin] = (None, "", "", _NO_ORIGIN)
        # Calls a blocking Client runs in its caller's thread (``_h1_direct``);
        # through a proxy every call takes the loop.
        self.direct: DirectPool | None = (
            DirectPool(self._limits, self._context, follow_redirects)
            if self._proxies is None
            else None
        )

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Pool:
        if self._closed:
            raise UsageError("this transport is closed")
        refuse_if_running(self._loop)
        pool = Pool(self._limits, loop)

        async def close() -> None:
            pool.close()

        self._timeouts = Timeouts(loop)
        self._guard = await start_guard(close)
        self._pool = pool
        self._loop = loop
        return pool

    def _context(self) -> ssl.SSLContext:
        context = self._ssl
        if context is None:
            context = ssl.create_default_context()
            if self._verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        return context

    async def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """Send one attempt to ``url`` and return its response, read in full (or, streamed, its head)."""
        loop = asyncio.get_running_loop()
        pool = self._pool if self._loop is loop else None
        if pool is None:
            pool = await self._open(loop)
        assert self._timeouts is not None
        # A replica by address keeps the name (identity first: yarl's host is computed).
        name = None
        if url is not request.url and url.host != request.url.host:
            name = request.url
        proxies = self._proxies
        proxy = None if proxies is None else proxies.proxy_for(url)
        try:
            with self._timeouts.guard(timeout):
                # The usual attempt is one exchange, awaited here: every frame
                # between the call and the socket is paid on each wake-up.
                exchanged = await self._exchange(
                    pool, request, request.method, url, headers, request.body, name, proxy
                )
                if exchanged[0].status in _HOP_STATUSES:
                    exchanged, url = await self._follow(
                        pool, request, url, headers, name, proxy, exchanged
                    )
                return self._response(pool, request, url, exchanged)
        except Exception as exc:
            mapped = map_error(exc, request, endpoint_of(url))
            if mapped is None:
                raise
            raise mapped from exc

    async def _follow(
        self,
        pool: Pool,
        request: Request,
        url: URL,
        headers: Mapping[str, str],
        name: URL | None,
        proxy: Proxy | None,
        exchanged: _Exchanged,
    ) -> tuple[_Exchanged, URL]:
        """After an answer that may send the request on: the redirects (``_h1_redirect``), or a proxy's 407.

        Returns the last exchange and the URL it went to.
        """
        method, body = request.method, request.body
        visited: list[URL] = []
        while True:
            reader, _, held = exchanged
            status = reader.status
            if status == 407 and proxy is not None and url.scheme == "http":
                if held is not None:  # a streamed 407's body is never read
                    held.detach()
                    pool.release(held, False)
                raise ProxyFailed(proxy, status=status, reason=reader.reason)
            if not (self._follow_redirects and status in REDIRECT_STATUSES):
                return exchanged, url
            location = location_of(reader)
            if location is None:
                return exchanged, url
            if held is not None:  # a streamed redirect's body is never read
                held.detach()
                pool.release(held, False)
            hop = next_hop(
                request, reader, location, Hop(url, method, body, headers, name), visited
            )
            url, method, body, headers, name = hop
            # Each hop is routed on its own: a redirect may leave NO_PROXY's hosts.
            proxy = None if self._proxies is None else self._proxies.proxy_for(url)
            try:
                exchanged = await self._exchange(
                    pool, request, method, url, headers, body, name, proxy
                )
            except Exception as error:  # named by the hop that failed, not the first
                raise AtHop(error, endpoint_of(url)) from error

    def _response(self, pool: Pool, request: Request, url: URL, exchanged: _Exchanged) -> Response:
        """The attempt's response, from the last exchange (to ``url``)."""
        reader, resent, held = exchanged
        if request.stream:
            if held is None:  # it all came with the head: nothing left on the connection
                source: H1Body | BufferedBody = BufferedBody(decoded(reader, None))
            else:
                source = H1Body(pool, held, reader, lambda error: map_error(error, request))
            response: Response = AsyncStreamResponse(
                status_code=reader.status,
                headers=CIMultiDictProxy(CIMultiDict(reader.headers)),
                url=url,
                request=request,
                source=source,
                reason=reader.reason,
                max_read=self._limits.max_response_size,
            )
        else:
            response = whole_response(request, url, reader, self._limits.max_response_size)
        if resent:
            mark_resent(response)
        return response

    async def _exchange(
        self,
        pool: Pool,
        request: Request,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | Body | None,
        name: URL | None,
        proxy: Proxy | None = None,
    ) -> _Exchanged:
        """One request on the wire, resent once on a fresh connection if the reused one was dead.

        Returns the response's reader, whether it took the resend, and, for
        a streamed response whose body is still coming, its connection.
        """
        last = self._last
        if last[0] is url and name is None and proxy is None:
            # The URL of the attempt before, sent direct: a client reuses one
            # URL object per path, so most attempts skip working these out.
            _, host, target, key = last
        else:
            host = (name or url).host_port_subcomponent or ""
            target = url.raw_path_qs
            if proxy is not None and url.scheme == "http":  # forwarded: the proxy reads the URL
                target = absolute_target("http", url.host_port_subcomponent or "", target)
                if proxy.authorization:
                    headers = {**headers, "Proxy-Authorization": proxy.authorization}
            key = Origin(
                url.scheme,
                url.host or "",
                url.port or 0,
                name.host if name is not None else None,
                proxy,
            )
            if name is None and proxy is None:
                self._last = (url, host, target, key)  # one tuple, swapped whole
        head = request_head(method, target, host, headers, body)
        streaming = request.stream
        cap = None if streaming else self._limits.max_response_size
        head_only = method == "HEAD"
        conn = pool.take_idle(key)
        if conn is None:
            conn = await pool.acquire(key, self._connect, fresh=False)
        if (
            conn.used
            and (
                not request.replayable
                or not (body is None or type(body) is bytes or may_resend(body))
            )
            and not conn.quiet()
        ):
            # A request that cannot be sent twice gets no resend if the
            # connection turns out dead: its close, already on the socket, is
            # looked for first (a poll, on these requests only; the usual GET
            # is decided by two tests, no call).
            pool.release(conn, False)
            conn = await pool.acquire(key, self._connect, fresh=True)
        reused = conn.used
        reader = ResponseReader(head_only, cap, stream=streaming)
        try:
            if body is None or type(body) is bytes:
                # The usual request, awaited here rather than in a coroutine
                # of the connection's: a frame less on every wake-up.
                waiter = conn.begin(head, body, reader)
                try:
                    await waiter
                except BaseException:
                    conn.end(waiter, reader, True)
                    raise
                conn.end(waiter, reader, False)
            else:
                await conn.exchange(head, _sent(body), reader)
        except ConnectionLost as lost:
            pool.release(conn, False)
            if not (reused and worth_resending(lost, request, body)):
                raise
        except BaseException:
            pool.release(conn, False)  # a cancelled exchange closes: the server sees it
            raise
        else:
            return reader, False, _held(pool, conn, reader)
        # The resend: a fresh connection, inside the same attempt.
        conn = await pool.acquire(key, self._connect, fresh=True)
        reader = ResponseReader(head_only, cap, stream=streaming)
        try:
            await conn.exchange(head, _sent(body), reader)
        except BaseException as error:
            pool.release(conn, False)
            if isinstance(error, Exception):
                raise Resent(error) from error
            raise
        return reader, True, _held(pool, conn, reader)

    async def _connect(self, key: Origin) -> H1Connection:
        if key.proxy is not None:
            return await self._connect_through(key, key.proxy)
        loop = asyncio.get_running_loop()
        tls = key.scheme == "https"
        try:
            _, conn = await loop.create_connection(
                lambda: H1Connection(key, loop),
                key.host,
                key.port,
                ssl=self._context() if tls else None,
                server_hostname=(key.name or key.host) if tls else None,
            )
        except (OSError, ssl.SSLError) as error:  # refused, DNS, TLS handshake or certificate
            raise ConnectFailed(str(error)) from error
        return conn

    async def _connect_through(self, key: Origin, proxy: Proxy) -> H1Connection:
        """A connection to ``key``'s target through ``proxy`` (see ``_h1_proxy``)."""
        if key.scheme != "https":
            return await connect_plain(key, proxy)
        raw = await open_tunnel(key, proxy)
        loop = asyncio.get_running_loop()
        conn = H1Connection(key, loop)
        try:
            secure = await loop.start_tls(
                raw, conn, self._context(), server_hostname=key.name or key.host
            )
        except (OSError, ssl.SSLError) as error:  # the target's TLS: handshake or certificate
            raise ConnectFailed(str(error)) from error
        if secure is None:  # typeshed allows it; asyncio and uvloop return the transport
            raw.close()
            raise ConnectFailed("TLS did not start over the proxy's tunnel")
        conn.connection_made(secure)
        return conn

    async def aclose(self) -> None:
        """Close the pool's connections; the transport sends nothing after this."""
        self._closed = True
        if self.direct is not None:
            self.direct.close()
        guard, loop = self._guard, self._loop
        self._pool = self._guard = self._loop = None
        await stop_guard(guard, loop)


def _held(pool: Pool, conn: H1Connection, reader: ResponseReader) -> H1Connection | None:
    """``conn`` if a streamed body is still coming on it; else it goes back to the pool (None)."""
    if reader.complete:
        pool.release(conn, reader.reusable)
        return None
    return conn


def _sent(body: bytes | Body | None) -> bytes | BodySend | None:
    """What one exchange writes: the bytes, or a new pass over a streamed body."""
    return body.send() if isinstance(body, Body) else body
