"""A second HTTP transport: httpx's client, speaking HTTP/2 where the server offers it.

Theory of operation. One ``httpx.AsyncClient`` per transport, created on the
first ``send`` inside the loop that runs it (httpx's pool is bound to that
loop) and closed by ``aclose``; after that the transport refuses to send. Its
pool keeps connections alive between calls. Over TLS, ALPN picks HTTP/2 when
the server speaks it, and then every concurrent call to one origin shares one
connection as its own stream; over plain HTTP, and with ``http2=False``, each
call in flight holds an HTTP/1.1 connection.

Each attempt runs under the coalesced timer of ``microcall._timeouts``, the
same as the aiohttp transport: httpx's own timeouts are turned off, so that
timer alone ends an attempt (as AttemptTimeout), while a cancellation from
the caller (a losing hedge) passes through as a cancellation. httpx releases
the stream on the way out: an HTTP/1.1 connection caught mid-response is
closed, an HTTP/2 stream is dropped and its connection stays in use.

A streamed request (``Request.stream``) returns at the response's head: the
timer covers the head, and the body is handed on as httpx's own iterator
(``_httpx_stream``).

A call with cookies (``Request.redirect_cookies``) carries them across the
redirects httpx follows, hop by hop (``_httpx_cookies``).

httpx's exceptions become microcall's in one place, ``map_error``.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import AsyncGenerator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall._body import Body, BodySend, body_error
from microcall._limits import Limits
from microcall._request import Request, endpoint_of
from microcall._response import Response
from microcall._stream import AsyncStreamResponse
from microcall._timeouts import Timeouts
from microcall.errors import (
    AttemptTimeout,
    ConfigurationError,
    ConnectError,
    ProtocolError,
    ReadError,
    RedirectError,
    TransportError,
    UsageError,
)
from microcall.transports._httpx_cookies import EXTENSION, Hops, carry_cookies, keep_cookies
from microcall.transports._httpx_stream import HttpxBody
from microcall.transports._loops import refuse_if_running, start_guard, stop_guard
from microcall.transports._proxy import ProxyFailed
from microcall.transports._settings import checked_proxy, checked_settings, proxy_error, too_large

try:
    import httpx
except ImportError as missing:  # an optional dependency: say how to get it
    raise ImportError('HttpxTransport needs httpx: pip install "microcall[httpx]"') from missing

INSTALL_HINT = 'pip install "microcall[httpx]"'

# httpx's own default, which the transport keeps.
MAX_REDIRECTS = 20

# Answers that have no body, whatever their Content-Length says.
_NO_BODY_STATUSES = frozenset({204, 304})

# httpcore reports a connection the peer closed early with the same class
# (RemoteProtocolError) as bytes that are not HTTP; only its message tells a
# broken connection (ReadError, worth a retry) from a broken peer.
_CLOSED_EARLY = ("disconnected", "peer closed connection", "StreamReset", "ConnectionTerminated")


def map_error(exc: Exception, request: Request, where: str | None = None) -> Exception | None:
    """The microcall exception for an httpx one; the single place they are translated.

    None means "not ours to translate" (a bug, say): the caller re-raises it as is.
    ``where`` is the endpoint the attempt went to (a replica's, not the request's).
    Messages name the endpoint, never the URL: it may carry credentials.
    """
    if isinstance(exc, ProxyFailed):
        return proxy_error(request, exc)
    where = request.endpoint if where is None else where
    hop = _sent(exc)
    if hop is not None and hop.url.host:
        # The request that failed: a redirect hop's own, not the call's first.
        where = endpoint_of(URL(str(hop.url)))
    detail = str(exc) or type(exc).__name__
    error: TransportError
    if isinstance(exc, TimeoutError):  # the attempt's own guard
        error = AttemptTimeout(f"no response from {where} in time", request=request)
    elif isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):  # TLS failures too
        error = ConnectError(f"cannot connect to {where}: {detail}", request=request)
    elif isinstance(exc, httpx.TimeoutException):  # httpx's own timers; off unless changed
        error = AttemptTimeout(f"no response from {where} in time: {detail}", request=request)
    elif _redirected(exc, request) and isinstance(
        exc, (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.RemoteProtocolError)
    ):
        return RedirectError(
            f"{where} redirected to a Location that cannot be followed: {detail}",
            request=request,
        )
    elif isinstance(exc, httpx.RemoteProtocolError):
        if any(marker in detail for marker in _CLOSED_EARLY):
            error = ReadError(f"{where} closed the connection early: {detail}", request=request)
        else:
            error = ProtocolError(f"invalid HTTP from {where}: {detail}", request=request)
    elif isinstance(exc, httpx.NetworkError):  # read, write, close
        error = ReadError(f"connection to {where} failed: {detail}", request=request)
    elif isinstance(exc, httpx.TooManyRedirects):
        # httpx keeps no history on the error: the chain cannot be shown.
        return RedirectError(
            f"redirect loop, or a chain longer than httpx allows ({MAX_REDIRECTS}), "
            f"from {where}; it stopped before {_path(exc)}",
            request=request,
        )
    elif isinstance(exc, httpx.DecodingError):
        error = ProtocolError(f"invalid response from {where}: {detail}", request=request)
    elif isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
        return UsageError(f"cannot send {request!r}: {detail}")
    elif isinstance(exc, httpx.TransportError):
        error = TransportError(f"request to {where} failed: {exc!r}", request=request)
    elif _raised_by_the_connection(exc):
        # httpcore's HTTP/2 connection can fail in ways it does not wrap:
        # an attempt cancelled (a timeout, a losing hedge) as the connection
        # starts may leave it releasing a stream twice ("semaphore released
        # too many times") or h2 refusing the next frame. The connection is
        # the one that failed, not the call's arguments: a retriable error.
        error = ReadError(
            f"the connection to {where} failed: {type(exc).__name__}: {detail}", request=request
        )
    else:
        return None
    return error


# The origin a call's TLS server name belongs to, when it was sent to a replica by address.
REPLICA = "microcall.replica"


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


async def each_hop(request: httpx.Request) -> None:
    """The request hook, run for every hop httpx follows: what a call carries from hop to hop.

    httpx copies a request's extensions to every hop, the TLS server name
    given for a replica by address among them: a hop to another origin is
    checked against its own name. And the call's cookies follow it
    (``_httpx_cookies``).
    """
    extensions = request.extensions
    replica = extensions.get(REPLICA)
    if replica is not None and _origin_of(request.url) != replica:
        extensions.pop("sni_hostname", None)
    carry_cookies(request)


# Where an exception no httpx error wraps comes from the connection itself.
_CONNECTION_MODULES = ("httpcore", "h2", "hpack", "hyperframe", "anyio")


def _raised_by_the_connection(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside the HTTP stack under httpx (its last frame's module)."""
    frame = exc.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.split(".", 1)[0] in _CONNECTION_MODULES


def _sent(exc: Exception) -> httpx.Request | None:
    try:
        return exc.request if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # httpx raises it when the error has no request
        return None


def _redirected(exc: Exception, request: Request) -> bool:
    """Whether ``exc`` came from following a redirect rather than from the caller's own URL.

    The caller's URL was parsed when the request was built (``send`` refuses
    a bad one there): a bad URL met while sending is a Location's.
    """
    if isinstance(exc, httpx.InvalidURL):
        return True
    if isinstance(exc, httpx.RemoteProtocolError) and "location header" in str(exc):
        return True
    sent = _sent(exc)
    return sent is not None and str(sent.url) != str(request.url)


def _path(exc: Exception) -> str:
    sent = _sent(exc)
    return sent.url.path if sent is not None else "?"


async def read_capped(raw: httpx.Response, cap: int | None, request: Request) -> bytes:
    """The whole body of ``raw`` (a streamed response), or ResponseTooLarge past ``cap`` bytes.

    A declared length over the cap fails before a byte of the body is read;
    otherwise decoded bytes are counted as they arrive.
    """
    if cap is None or request.method == "HEAD" or raw.status_code in _NO_BODY_STATUSES:
        return await raw.aread()
    declared = raw.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large(request, cap, f"declares {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in raw.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise too_large(request, cap, "sent more")
        chunks.append(chunk)
    return b"".join(chunks)


def _streamed(body: Body, headers: Mapping[str, str]) -> tuple[BodySend, Mapping[str, str]]:
    """A streamed body as httpx content: an async iterable (each iteration starts over).

    With a known length it goes with its Content-Length (httpx then leaves
    out its own ``Transfer-Encoding: chunked``); HTTP/2 frames it either way.
    """
    if body.length is not None:
        headers = {**headers, "Content-Length": str(body.length)}
    return body.send(), headers


class HttpxTransport:
    """HTTP/2 (and HTTP/1.1) over httpx, with a keep-alive pool shared by every call of a client.

    ::

        transport = HttpxTransport(verify=my_ca_context)
        async with microcall.AsyncClient("https://catalog:8443", transport=transport) as client:
            ...

    ``limits.max_connections`` bounds the connections of the pool and
    ``limits.keepalive_expiry`` how long an idle one is kept. Under HTTP/2 a
    connection carries many calls at once, so the bound is on connections,
    not on calls. httpx has no per-host bound: a ``Limits`` with
    ``max_connections_per_host`` set is refused rather than half applied.
    ``verify`` is True (the CA bundle httpx ships, via certifi), False, or an
    ``ssl.SSLContext`` used as given. ``http2=False`` speaks HTTP/1.1 only.
    ``proxy`` (an ``http://`` forward proxy, user-info for its credentials)
    and ``trust_env`` (the environment's ``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``) route calls through a proxy (see
    ``_httpx_proxy``; docs/proxies.md).
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        verify: bool | ssl.SSLContext = True,
        follow_redirects: bool = True,
        http2: bool = True,
        proxy: str | URL | None = None,
        trust_env: bool = False,
    ) -> None:
        self._limits = checked_settings(limits, verify, follow_redirects)
        self._proxies = checked_proxy(proxy, trust_env)
        if self._limits.max_connections_per_host is not None:
            raise ConfigurationError(
                "HttpxTransport cannot bound connections per host (httpx has no such limit); "
                "leave max_connections_per_host unset or use the aiohttp transport"
            )
        if not isinstance(http2, bool):
            raise ConfigurationError(f"http2 must be a bool, got {http2!r}")
        if http2:
            try:
                importlib.import_module("h2")
            except ImportError as missing:
                raise ConfigurationError(
                    f"HTTP/2 needs the h2 package: {INSTALL_HINT} (or pass http2=False)"
                ) from missing
        self._verify = verify
        self._follow_redirects = follow_redirects
        self._http2 = http2
        self._client: httpx.AsyncClient | None = None
        self._timeouts: Timeouts | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        self._closed = False

    async def _open(self, loop: asyncio.AbstractEventLoop) -> httpx.AsyncClient:
        if self._closed:
            raise UsageError("this transport is closed")
        refuse_if_running(self._loop)
        limits = self._limits
        pool = httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )
        routed = None
        if self._proxies is not None:
            from microcall.transports._httpx_proxy import ProxyRouter  # needs httpx: here

            # A pool per route, each with the settings the client would have applied.
            def make(proxy: httpx.Proxy | None) -> httpx.AsyncHTTPTransport:
                return httpx.AsyncHTTPTransport(
                    verify=self._verify, http2=self._http2, limits=pool, proxy=proxy
                )

            routed = ProxyRouter(self._proxies, make)
        client = httpx.AsyncClient(
            http2=self._http2,
            verify=self._verify,
            follow_redirects=self._follow_redirects,
            max_redirects=MAX_REDIRECTS,
            limits=pool,
            transport=routed,
            # The attempt's guard is the only timer: httpx's per-phase ones
            # would fire on their own schedule and cost a timer each.
            timeout=httpx.Timeout(None),
            # Services do not share cookies between calls: a policy that
            # allows no domain keeps the jar empty.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            # The environment's proxies are read by microcall's own settings
            # (trust_env=), and .netrc is not a service's business.
            trust_env=False,
            # Run for every hop: a call's cookies follow its redirects
            # (_httpx_cookies), a replica's name stays with it.
            event_hooks=(
                {"request": [each_hop], "response": [keep_cookies]}
                if self._follow_redirects
                else None
            ),
        )
        self._timeouts = Timeouts(loop)
        self._guard = await start_guard(client.aclose)
        self._client = client
        self._loop = loop
        return client

    async def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """Send one attempt to ``url`` and return its response, read in full."""
        loop = asyncio.get_running_loop()
        client = self._client if self._loop is loop else None
        if client is None:
            client = await self._open(loop)
        assert self._timeouts is not None
        extensions: dict[str, object] | None = None
        # A replica by address: keep the name (identity first: yarl's host is computed).
        if url is not request.url and url.host != request.url.host:
            headers = {**headers, "Host": request.url.host_port_subcomponent or ""}
            if url.scheme == "https" and request.url.host:
                extensions = {"sni_hostname": request.url.host}
        if request.redirect_cookies is not None and self._follow_redirects:
            extensions = {**(extensions or {}), EXTENSION: Hops(request.redirect_cookies)}
        body: bytes | BodySend | None = request.body  # type: ignore[assignment]
        if not (body is None or type(body) is bytes):
            body, headers = _streamed(request.body, headers)  # type: ignore[arg-type]
        try:
            sending = client.build_request(
                request.method,
                str(url),
                headers=headers,
                content=body,
                extensions=extensions,
            )
        except (httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            raise UsageError(f"cannot send {request!r}: {exc}") from exc
        if extensions is not None and "sni_hostname" in extensions:
            # Read from httpx's own URL, as the hops' are: the same port for the same origin.
            sending.extensions[REPLICA] = _origin_of(sending.url)
        try:
            with self._timeouts.guard(timeout):
                raw = await client.send(sending, stream=True)
                if not request.stream:
                    try:
                        content = await read_capped(raw, self._limits.max_response_size, request)
                    finally:
                        await raw.aclose()
        except Exception as exc:
            if isinstance(body, BodySend) and body.failure is not None:
                raise body_error(body.failure, request) from body.failure
            mapped = map_error(exc, request, endpoint_of(url))
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            if isinstance(body, BodySend):
                body.close()  # the attempt is over: a generator's reading thread stops
        headers_in = CIMultiDictProxy(CIMultiDict(raw.headers.multi_items()))
        # The URL it was sent to, unless a redirect moved it.
        url_in = URL(str(raw.url), encoded=True) if raw.history else url
        if request.stream:
            return AsyncStreamResponse(
                status_code=raw.status_code,
                headers=headers_in,
                url=url_in,
                request=request,
                source=HttpxBody(raw, lambda error: map_error(error, request)),
                reason=raw.reason_phrase,
                max_read=self._limits.max_response_size,
            )
        return Response(
            status_code=raw.status_code,
            headers=headers_in,
            content=content,
            url=url_in,
            request=request,
            reason=raw.reason_phrase,
        )

    async def aclose(self) -> None:
        """Close the pool's connections; the transport sends nothing after this."""
        self._closed = True
        guard, loop = self._guard, self._loop
        self._client = self._guard = self._loop = None
        await stop_guard(guard, loop)
