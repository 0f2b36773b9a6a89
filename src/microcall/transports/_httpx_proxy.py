"""The httpx transport's way through a forward proxy: an httpx transport that routes each request.

Theory of operation. httpx speaks to forward proxies itself (httpcore's
``AsyncHTTPProxy``: absolute-form requests for ``http://``, a ``CONNECT``
tunnel for ``https://``, HTTP/2 inside it when ALPN says so); what it must
be told is which proxy, and httpx's own way (``mounts`` keyed by URL
patterns, or its ``trust_env`` reading of the environment) follows rules
of its own for ``NO_PROXY``. ``ProxyRouter`` is an ``httpx`` transport
(its public ``AsyncBaseTransport``) that holds one pooled
``AsyncHTTPTransport`` per proxy and one for direct calls, and hands each
request, redirect hops included (httpx calls the transport per hop), to
the one ``ProxySettings`` choose: the same choice the other transports make.

The proxy's credentials are given to httpx as the proxy's headers: on the
``CONNECT`` for a tunnel, on the request for a forwarded plain-HTTP one,
never inside a tunnel. Failures of the proxy come out as ``ProxyFailed``:
httpx's ``ProxyError`` (CONNECT refused), a ``ConnectError`` on a proxied
request that is not about TLS (only the proxy is connected to; a TLS
failure is the target's certificate, and stays a ``ConnectError``), and a
``407`` answer to a forwarded request.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx

from microcall.transports._proxy import Proxy, ProxyFailed, ProxySettings

_DEFAULT_PORTS = {"http": 80, "https": 443}

Make = Callable[[httpx.Proxy | None], httpx.AsyncHTTPTransport]


class ProxyRouter(httpx.AsyncBaseTransport):
    """Sends each request direct or through its proxy, on a pool per route.

    ``make`` builds one pooled transport (with the client's verify, limits
    and HTTP/2 settings) for a proxy, or for direct calls given None.
    """

    def __init__(self, settings: ProxySettings, make: Make) -> None:
        self._settings = settings
        self._direct = make(None)
        self._through: dict[Proxy, httpx.AsyncHTTPTransport] = {}
        for proxy in (settings.http, settings.https):
            if proxy is not None and proxy not in self._through:
                headers = (
                    {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
                )
                self._through[proxy] = make(httpx.Proxy(str(proxy.url), headers=headers))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        port = url.port or _DEFAULT_PORTS.get(scheme, 0)
        proxy = self._settings.proxy_for_origin(scheme, url.host, port)
        if proxy is None:
            return await self._direct.handle_async_request(request)
        try:
            response = await self._through[proxy].handle_async_request(request)
        except httpx.ProxyError as error:  # httpcore: "<status> <reason>" of the CONNECT answer
            status, _, reason = str(error).partition(" ")
            if status.isdigit():
                raise ProxyFailed(proxy, status=int(status), reason=reason) from error
            raise ProxyFailed(proxy, f"would not open a tunnel: {error}") from error
        except httpx.ConnectError as error:
            if _about_tls(error):
                raise
            raise ProxyFailed(proxy, f"cannot be reached: {error}") from error
        if scheme == "http" and response.status_code == 407:
            await response.aclose()
            raise ProxyFailed(proxy, status=407, reason=response.reason_phrase)
        return response

    async def aclose(self) -> None:
        await self._direct.aclose()
        for transport in self._through.values():
            await transport.aclose()


def _about_tls(error: BaseException) -> bool:
    """Whether a TLS failure caused ``error`` (the target's certificate, through the tunnel)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
