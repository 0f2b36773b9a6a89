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
  redirects; the resend on a fresh connection of a request whose reused
  connection was already dead (the rule of ``_aiohttp_resend``, with the
  same record: ``Response.resent`` and the error's flag); TLS through the
  loop; and the one place errors become microcall's;
- ``_h1_proxy``: the way through a forward proxy (``proxy=``,
  ``trust_env=``): absolute-form requests, CONNECT tunnels.

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
import zlib
from collections.abc import AsyncGenerator, Mapping

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall._attempt import mark_resent
from microcall._body import (
    Body,
    BodyFailed,
    BodySend,
    body_error,
    cannot_redirect,
    may_resend,
)
from microcall._limits import Limits
from microcall._request import Request
from microcall._response import HeaderLines, Response
from microcall._stream import AsyncStreamResponse, BufferedBody
from microcall._timeouts import Timeouts
from microcall.errors import (
    AttemptTimeout,
    ConnectError,
    ProtocolError,
    ReadError,
    RedirectError,
    TransportError,
    UsageError,
)
from microcall.transports._h1_conn import ConnectionLost, H1Connection, Origin
from microcall.transports._h1_pool import Pool
from microcall.transports._h1_proxy import absolute_target, connect_plain, open_tunnel
from microcall.transports._h1_stream import H1Body
from microcall.transports._h1_wire import ResponseReader, TooLarge, WireError, request_head
from microcall.transports._loops import refuse_if_running, start_guard, stop_guard
from microcall.transports._proxy import Proxy, ProxyFailed
from microcall.transports._settings import (
    checked_proxy,
    checked_settings,
    proxy_error,
    redirect_chain,
    too_large,
)

# aiohttp's limit, which the other transports' users know.
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}


class ConnectFailed(Exception):
    """A connection could not be opened (refused, DNS, TLS handshake): the cause is chained."""


class Redirected(Exception):
    """A redirect that cannot be followed: a bad Location, a loop, or too long a chain."""


class Resent(Exception):
    """A failure of the resend on a fresh connection (the record says the request was resent)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def map_error(exc: BaseException, request: Request) -> Exception | None:
    """The microcall exception for a failure of this transport; the single place they are translated.

    None means "not ours to translate" (a bug, say): the caller re-raises it as is.
    Messages name the endpoint, never the URL: it may carry credentials.
    """
    if isinstance(exc, Resent):
        mapped = map_error(exc.error, request)
        if mapped is not None:
            mark_resent(mapped)
        return mapped
    where = request.endpoint
    if isinstance(exc, BodyFailed):
        return body_error(exc, request)
    error: TransportError
    if isinstance(exc, TimeoutError):  # the attempt's own guard
        error = AttemptTimeout(f"no response from {where} in time", request=request)
    elif isinstance(exc, ProxyFailed):
        return proxy_error(request, exc)
    elif isinstance(exc, ConnectFailed):
        cause = exc.__cause__
        error = ConnectError(f"cannot connect to {where}: {cause or exc}", request=request)
    elif isinstance(exc, ConnectionLost):
        if exc.received:
            error = ReadError(f"{where} closed the connection mid-response: {exc}", request=request)
        else:
            error = ReadError(f"{where} closed the connection before answering", request=request)
    elif isinstance(exc, WireError):
        error = ProtocolError(f"invalid HTTP from {where}: {exc}", request=request)
    elif isinstance(exc, TooLarge):
        how = f"declares {exc.declared} bytes" if exc.declared is not None else "sent more"
        return too_large(request, exc.cap, how)
    elif isinstance(exc, Redirected):
        return RedirectError(str(exc), request=request)
    elif isinstance(exc, (zlib.error, EOFError)):
        error = ProtocolError(f"invalid compressed body from {where}: {exc}", request=request)
    elif isinstance(exc, OSError):
        error = ReadError(f"connection to {where} failed: {exc}", request=request)
    else:
        return None
    return error


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
        try:
            with self._timeouts.guard(timeout):
                return await self._follow(pool, request, url, headers, name)
        except Exception as exc:
            mapped = map_error(exc, request)
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
    ) -> Response:
        """The exchange, and the redirects after it when they are followed."""
        method, body = request.method, request.body
        visited: list[URL] = []
        proxies = self._proxies
        while True:
            # Each hop is routed on its own: a redirect may leave NO_PROXY's hosts.
            proxy = None if proxies is None else proxies.proxy_for(url)
            reader, resent, held = await self._exchange(
                pool, request, method, url, headers, body, name, proxy
            )
            status = reader.status
            if status == 407 and proxy is not None and url.scheme == "http":
                if held is not None:  # a streamed 407's body is never read
                    held.detach()
                    pool.release(held, False)
                raise ProxyFailed(proxy, status=status, reason=reader.reason)
            if not (self._follow_redirects and status in REDIRECT_STATUSES):
                break
            location = next((v for k, v in reader.headers if k.lower() == "location"), None)
            if location is None:
                break
            if held is not None:  # a streamed redirect's body is never read
                held.detach()
                pool.release(held, False)
            visited.append(url)
            url = self._redirect_target(request, url, location)
            if len(visited) >= MAX_REDIRECTS:
                raise Redirected(redirect_chain(request.endpoint, [*visited, url]))
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
            elif not may_resend(body):
                raise Redirected(cannot_redirect(request))
            if name is not None or url.origin() != visited[-1].origin():
                # A new origin: the name a replica stood for and the caller's
                # credentials stay with the old one.
                headers = {
                    key: value
                    for key, value in headers.items()
                    if key.lower() not in ("host", "authorization", "cookie")
                }
                name = None
            if (hops := request.redirect_cookies) is not None:
                hops.keep(visited[-1], [v for k, v in reader.headers if k.lower() == "set-cookie"])
                headers = _with_cookie(headers, hops.header_for(url))
        response: Response
        if request.stream:
            if held is None:  # it all came with the head: nothing left on the connection
                source: H1Body | BufferedBody = BufferedBody(_decoded(reader, None))
            else:
                source = H1Body(pool, held, reader, lambda error: map_error(error, request))
            response = AsyncStreamResponse(
                status_code=status,
                headers=CIMultiDictProxy(CIMultiDict(reader.headers)),
                url=url,
                request=request,
                source=source,
                reason=reader.reason,
                max_read=self._limits.max_response_size,
            )
        else:
            response = Response(
                status_code=status,
                headers=HeaderLines(reader.header_lines),
                content=_decoded(reader, self._limits.max_response_size),
                url=url,
                request=request,
                reason=reader.reason,
            )
        if resent:
            mark_resent(response)
        return response

    @staticmethod
    def _redirect_target(request: Request, url: URL, location: str) -> URL:
        try:
            given = URL(location)
            target = url.join(given)
        except ValueError as error:
            raise Redirected(
                f"{request.endpoint} redirected to a Location that cannot be followed: {error}"
            ) from error
        if (
            (given.scheme and not given.host)
            or target.scheme not in DEFAULT_PORTS
            or not target.host
        ):
            raise Redirected(
                f"{request.endpoint} redirected to a Location that cannot be followed: "
                f"{target.scheme or 'no'} scheme, {'a' if target.host else 'no'} host"
            )
        return target

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
    ) -> tuple[ResponseReader, bool, H1Connection | None]:
        """One request on the wire, resent once on a fresh connection if the reused one was dead.

        Returns the response's reader, whether it took the resend, and, for
        a streamed response whose body is still coming, its connection.
        """
        host = (name or url).host_port_subcomponent or ""
        target = url.raw_path_qs
        if proxy is not None and url.scheme == "http":  # forwarded: the proxy reads the URL
            target = absolute_target("http", url.host_port_subcomponent or "", target)
            if proxy.authorization:
                headers = {**headers, "Proxy-Authorization": proxy.authorization}
        head = request_head(method, target, host, headers, body)
        key = Origin(
            url.scheme,
            url.host or "",
            url.port or 0,
            name.host if name is not None else None,
            proxy,
        )
        streaming = request.stream
        cap = None if streaming else self._limits.max_response_size
        head_only = method == "HEAD"
        conn = pool.take_idle(key)
        if conn is None:
            conn = await pool.acquire(key, self._connect, fresh=False)
        reused = conn.used
        reader = ResponseReader(head_only, cap, stream=streaming)
        try:
            await conn.exchange(head, _sent(body), reader)
        except ConnectionLost as lost:
            pool.release(conn, False)
            if not (reused and _worth_resending(lost, request, body)):
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
                lambda: H1Connection(key),
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
        conn = H1Connection(key)
        try:
            secure = await asyncio.get_running_loop().start_tls(
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
        guard, loop = self._guard, self._loop
        self._pool = self._guard = self._loop = None
        await stop_guard(guard, loop)


def _held(pool: Pool, conn: H1Connection, reader: ResponseReader) -> H1Connection | None:
    """``conn`` if a streamed body is still coming on it; else it goes back to the pool (None)."""
    if reader.complete:
        pool.release(conn, reader.reusable)
        return None
    return conn


def _worth_resending(lost: ConnectionLost, request: Request, body: bytes | Body | None) -> bool:
    """Whether a request that met a dead reused connection may go again (see the module).

    A body read once goes again only if no chunk of it was taken.
    """
    if not may_resend(body):
        return False
    if not lost.written:
        return True  # not a byte of it left: the server never saw it
    return request.replayable and not lost.received


def _sent(body: bytes | Body | None) -> bytes | BodySend | None:
    """What one exchange writes: the bytes, or a new pass over a streamed body."""
    return body.send() if isinstance(body, Body) else body


def _with_cookie(headers: Mapping[str, str], cookie: str | None) -> dict[str, str]:
    """``headers`` with ``cookie`` as their Cookie header (and none when it is None)."""
    kept = {key: value for key, value in headers.items() if key.lower() != "cookie"}
    if cookie:
        kept["Cookie"] = cookie
    return kept


def _decoded(reader: ResponseReader, cap: int | None) -> bytes:
    """The body, decompressed if the server compressed it (gzip or deflate), within ``cap``."""
    body = reader.body()
    encoding = reader.content_encoding
    if not body or encoding not in ("gzip", "deflate", "x-gzip"):
        return body
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    limit = 0 if cap is None else cap + 1
    content = decompressor.decompress(body, limit)
    if cap is not None and (len(content) > cap or decompressor.unconsumed_tail):
        raise TooLarge(cap, None)
    return content + decompressor.flush()
