"""The default transport: aiohttp's client over a pooled, keep-alive connector."""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, NoReturn

import aiohttp
from yarl import URL

from microcall._attempt import mark_resent
from microcall._body import body_error
from microcall._limits import Limits
from microcall._request import Request, endpoint_of
from microcall._response import Response
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
from microcall.transports._aiohttp_cookies import carrying
from microcall.transports._aiohttp_proxy import routing
from microcall.transports._aiohttp_resend import (
    ConnectionDropped,
    FreshConnector,
    Handler,
    Middleware,
    Resender,
)
from microcall.transports._aiohttp_stream import AiohttpBody
from microcall.transports._aiohttp_upload import BodyPayload
from microcall.transports._loops import refuse_if_running, start_guard, stop_guard
from microcall.transports._proxy import ProxyFailed
from microcall.transports._settings import (
    checked_proxy,
    checked_settings,
    proxy_error,
    redirect_chain,
    too_large,
)

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest, ClientResponse

# Answers that have no body, whatever their Content-Length says.
_NO_BODY_STATUSES = frozenset({204, 304})


def map_error(exc: Exception, request: Request, where: str | None = None) -> Exception | None:
    """The microcall exception for an aiohttp one; the single place they are translated.

    None means "not ours to translate" (a bug, say): the caller re-raises it as is.
    ``where`` is the endpoint the attempt went to (a replica's, not the request's).
    """
    if isinstance(exc, ConnectionDropped):
        mapped = map_error(exc.error, request, where)
        if exc.resent and mapped is not None:
            mark_resent(mapped)
        return mapped
    if isinstance(exc, ProxyFailed):
        return proxy_error(request, exc)
    where = request.endpoint if where is None else where
    host, port = getattr(exc, "host", None), getattr(exc, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        where = f"{host}:{port}"  # the hop that failed (a redirect's), as aiohttp names it
    error: TransportError
    if isinstance(exc, TimeoutError):  # also aiohttp's ServerTimeoutError
        error = AttemptTimeout(f"no response from {where} in time", request=request)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = ConnectError(f"cannot connect to {where}: {exc.os_error}", request=request)
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = ReadError(f"incomplete response body from {where}: {exc}", request=request)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        error = ReadError(f"{where} closed the connection before answering", request=request)
    elif isinstance(exc, aiohttp.TooManyRedirects):
        urls = [response.url for response in exc.history]
        return RedirectError(redirect_chain(where, urls), request=request)
    elif isinstance(exc, aiohttp.RedirectClientError):  # a Location that is not an http(s) URL
        return RedirectError(
            f"{where} redirected to a Location that cannot be followed: {exc}", request=request
        )
    elif isinstance(exc, aiohttp.ClientResponseError):
        error = ProtocolError(f"invalid HTTP from {where}: {exc.message}", request=request)
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return UsageError(f"cannot send to URL {exc}")
    elif isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        error = ReadError(f"connection to {where} failed: {exc}", request=request)
    elif isinstance(exc, ValueError):  # aiohttp refusing the request as given
        return UsageError(f"cannot send {request!r}: {exc}")
    elif isinstance(exc, aiohttp.ClientError):
        error = TransportError(f"request to {where} failed: {exc!r}", request=request)
    else:
        return None
    return error


def named_at(replica: URL) -> Middleware:
    """The middleware keeping a service's name (Host, TLS server name) to the replica it was sent to.

    aiohttp keeps both on every redirect hop; a hop to another origin is
    checked against its own name, and names itself, as the first hop of a
    call to it would be.
    """
    origin = replica.origin()

    async def middleware(req: ClientRequest, handler: Handler) -> ClientResponse:
        if req.url.origin() != origin:
            req.server_hostname = None
            req.headers["Host"] = req.url.host_port_subcomponent or ""
        return await handler(req)

    return middleware


def refuse_switch(raw: aiohttp.ClientResponse) -> NoReturn:
    """Refuse a 101: aiohttp hands it over as an answer, but nothing here asked for an upgrade.

    What follows it on the connection is another protocol's, so the
    connection is closed with it (a ProtocolError, as the other transports give).
    """
    raw.close()
    raise aiohttp.ClientResponseError(
        raw.request_info,
        raw.history,
        status=raw.status,
        message="the server switched protocols, though none was asked for",
    )


async def read_capped(raw: aiohttp.ClientResponse, cap: int | None, request: Request) -> bytes:
    """The whole body of ``raw``, or ResponseTooLarge as soon as it passes ``cap`` bytes.

    A declared length over the cap fails before a byte of the body is read;
    otherwise bytes are counted as they arrive (chunked, read to the end,
    decompressed, or longer than declared), and aiohttp reads from the socket
    only as fast as they are taken, so no more than the cap is ever held.
    """
    if cap is None or request.method == "HEAD" or raw.status in _NO_BODY_STATUSES:
        return await raw.read()
    length = raw.content_length
    if length is not None and length > cap:
        raise too_large(request, cap, f"declares {length} bytes")
    if length is not None and "Content-Encoding" not in raw.headers:
        return await raw.read()  # aiohttp reads no more than the declared length
    chunks: list[bytes] = []
    size = 0
    async for chunk in raw.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise too_large(request, cap, "sent more")
        chunks.append(chunk)
    return b"".join(chunks)


class AiohttpTransport:
    """HTTP/1.1 over aiohttp with a keep-alive pool shared by every call of a client.

    The session is created on first use, inside the event loop that runs the
    call: aiohttp binds a session to its loop. Used from a new loop after the
    first one ended (a second ``asyncio.run``), it opens a new session there;
    the old one was closed as its loop shut down (see ``_loops``). Each
    attempt's timeout is kept by the coalesced timers of
    ``microcall._timeouts`` rather than a ``ClientTimeout``: aiohttp would arm
    and cancel a loop timer per request.

    One attempt is one request on the wire, with one exception: a request
    whose reused keep-alive connection turns out dead before any response
    byte arrived is sent again once on a fresh connection (see
    ``_aiohttp_resend``; the attempt's record says ``resent``).

    ``proxy`` (an ``http://`` forward proxy, user-info for its credentials)
    and ``trust_env`` (the environment's ``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``) route calls through a proxy, chosen per
    redirect hop (see ``_aiohttp_proxy``; docs/proxies.md).

    A call with cookies (``Request.redirect_cookies``) carries them across
    the redirects aiohttp follows, hop by hop (``_aiohttp_cookies``).

    A streamed request (``Request.stream``) returns at the response's head,
    its body left in aiohttp's reader (``_aiohttp_stream``); a body that
    arrived whole with the head is read at once, and its connection released.
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
        self._follow_redirects = follow_redirects
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: Timeouts | None = None
        self._resender: Resender | None = None
        # The middlewares per request: (replayable, once), with the proxy router first.
        self._middlewares: tuple[tuple[Middleware, ...], tuple[Middleware, ...]] = ((), ())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        # Streamed bodies not yet read or closed: closing the session leaves
        # a reader waiting on one asleep until its deadline, so aclose() cuts
        # them. Weak: a stream its caller dropped is not kept alive by this.
        self._streams: weakref.WeakSet[AiohttpBody] = weakref.WeakSet()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        refuse_if_running(self._loop)
        limits = self._limits
        # ssl=True is aiohttp's verified default context; a context is used as given.
        ssl_setting: bool | ssl.SSLContext = self._verify
        connector = FreshConnector(
            limit=limits.max_connections,
            limit_per_host=limits.max_connections_per_host or 0,
            # aiohttp's pool never hands out a connection idle longer than this
            # (TCPConnector._get compares each one's release time with it).
            keepalive_timeout=limits.keepalive_expiry,
            ssl=ssl_setting,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            # Services do not share cookies between calls; a jar would also cost a
            # lookup per request.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._resender = resender = Resender(connector)
        router = () if self._proxies is None else (routing(self._proxies),)
        self._middlewares = (router + resender.replayable, router + resender.once)
        self._timeouts = Timeouts(loop)
        self._guard = await start_guard(session.close)
        self._session = session
        self._loop = loop
        return session

    async def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response:
        loop = asyncio.get_running_loop()
        session = self._session if self._loop is loop else None
        if session is None:
            session = await self._open(loop)
        resender = self._resender
        assert self._timeouts is not None
        assert resender is not None
        server_hostname = None
        # A replica by address: keep the name (identity first: yarl's host is computed).
        if url is not request.url and url.host != request.url.host:
            headers = {**headers, "Host": request.url.host_port_subcomponent or ""}
            if url.scheme == "https":
                server_hostname = request.url.host
        body: bytes | BodyPayload | None = request.body  # type: ignore[assignment]
        if not (body is None or type(body) is bytes):
            body = BodyPayload(request.body)  # type: ignore[arg-type]
        middlewares = self._middlewares[0 if request.replayable else 1]
        if request.redirect_cookies is not None and self._follow_redirects:
            middlewares = (carrying(request.redirect_cookies), *middlewares)
        if server_hostname is not None or "Host" in headers:
            middlewares = (named_at(url), *middlewares)
        # try/except rather than a context manager: it costs nothing unless
        # something fails, and this runs on every attempt.
        response: Response
        try:
            with self._timeouts.guard(timeout):
                opening = session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=self._follow_redirects,
                    server_hostname=server_hostname,
                    middlewares=middlewares,
                )
                if request.stream:
                    raw = await opening
                    if raw.status == 101:
                        refuse_switch(raw)
                    response = await self._streamed(raw, request)
                else:
                    async with opening as raw:
                        if raw.status == 101:
                            refuse_switch(raw)
                        content = await read_capped(raw, self._limits.max_response_size, request)
                    response = Response(
                        status_code=raw.status,
                        headers=raw.headers,
                        content=content,
                        url=raw.url,
                        request=request,
                        reason=raw.reason or "",
                    )
        except Exception as exc:
            if isinstance(body, BodyPayload) and body.failure is not None:
                raise body_error(body.failure, request) from body.failure  # aiohttp wraps it
            mapped = map_error(exc, request, endpoint_of(url))
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            if isinstance(body, BodyPayload):
                body.close_send()  # the attempt is over: a generator's reading thread stops
        if resender.took_resend(raw):
            mark_resent(response)
        return response

    async def _streamed(self, raw: aiohttp.ClientResponse, request: Request) -> AsyncStreamResponse:
        """A streamed response at its head; released now if its body came whole with the head."""
        try:
            if raw.content.is_eof():
                source: AiohttpBody | BufferedBody = BufferedBody(await raw.read())
            else:
                source = AiohttpBody(raw, lambda error: map_error(error, request), self._streams)
        except BaseException:
            raw.close()
            raise
        return AsyncStreamResponse(
            status_code=raw.status,
            headers=raw.headers,
            url=raw.url,
            request=request,
            source=source,
            reason=raw.reason or "",
            max_read=self._limits.max_response_size,
        )

    async def aclose(self) -> None:
        for stream in list(self._streams):
            stream.cut()
        guard, loop = self._guard, self._loop
        self._session = self._guard = self._loop = None
        await stop_guard(guard, loop)
