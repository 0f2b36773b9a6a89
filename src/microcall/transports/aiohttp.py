"""The default transport: aiohttp's client over a pooled, keep-alive connector."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiohttp
from yarl import URL

from microcall._limits import Limits
from microcall._request import Request
from microcall._response import Response
from microcall._timeouts import Timeouts
from microcall.errors import (
    AttemptTimeout,
    ConnectError,
    ProtocolError,
    ReadError,
    TransportError,
    UsageError,
)
from microcall.transports._settings import checked_settings


def map_error(exc: Exception, request: Request) -> Exception | None:
    """The microcall exception for an aiohttp one; the single place they are translated.

    None means "not ours to translate" (a bug, say): the caller re-raises it as is.
    """
    where = request.endpoint
    error: TransportError
    if isinstance(exc, TimeoutError):  # also aiohttp's ServerTimeoutError
        error = AttemptTimeout(f"no response from {where} in time", request=request)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = ConnectError(f"cannot connect to {where}: {exc.os_error}", request=request)
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = ReadError(f"incomplete response body from {where}: {exc}", request=request)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        error = ReadError(f"{where} closed the connection before answering", request=request)
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


class AiohttpTransport:
    """HTTP/1.1 over aiohttp with a keep-alive pool shared by every call of a client.

    The session is created on first use, inside the event loop that runs the
    call: aiohttp binds a session to its loop. Each attempt's timeout is kept
    by the coalesced timers of ``microcall._timeouts`` rather than a
    ``ClientTimeout``: aiohttp would arm and cancel a loop timer per request.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        verify: bool | ssl.SSLContext = True,
        follow_redirects: bool = True,
    ) -> None:
        self._limits = checked_settings(limits, verify, follow_redirects)
        self._verify = verify
        self._follow_redirects = follow_redirects
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: Timeouts | None = None

    def _open(self) -> aiohttp.ClientSession:
        limits = self._limits
        # ssl=True is aiohttp's verified default context; a context is used as given.
        ssl_setting: bool | ssl.SSLContext = self._verify
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections,
            limit_per_host=limits.max_connections_per_host or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=ssl_setting,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Services do not share cookies between calls; a jar would also cost a
            # lookup per request.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp silently sends an idempotent request again when its connection
        # drops before the status line. The engine's strategy decides about
        # retries (and counts them against the budget), so one attempt must be
        # one request on the wire. aiohttp's own test client sets this too.
        self._session._retry_connection = False
        self._timeouts = Timeouts(asyncio.get_running_loop())
        return self._session

    async def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response:
        session = self._session or self._open()
        assert self._timeouts is not None
        server_hostname = None
        # A replica by address: keep the name (identity first: yarl's host is computed).
        if url is not request.url and url.host != request.url.host:
            headers = {**headers, "Host": request.url.host_port_subcomponent or ""}
            if url.scheme == "https":
                server_hostname = request.url.host
        # try/except rather than a context manager: it costs nothing unless
        # something fails, and this runs on every attempt.
        try:
            with self._timeouts.guard(timeout):
                async with session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=request.body,
                    allow_redirects=self._follow_redirects,
                    server_hostname=server_hostname,
                ) as raw:
                    content = await raw.read()
        except Exception as exc:
            mapped = map_error(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        return Response(
            status_code=raw.status,
            headers=raw.headers,
            content=content,
            url=raw.url,
            request=request,
            reason=raw.reason or "",
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
