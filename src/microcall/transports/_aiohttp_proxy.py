"""The aiohttp transport's way through a forward proxy: a client middleware that routes each hop.

Theory of operation. aiohttp speaks to forward proxies itself (absolute-form
requests for ``http://``, a ``CONNECT`` tunnel and TLS over it for
``https://``); what it is told per request is which proxy. Passing
``proxy=`` to ``ClientSession.request`` would send every redirect hop
through the first hop's proxy, even a hop to a host ``NO_PROXY`` names; so
the choice is made here instead, in a client middleware, which aiohttp
runs for every hop of a redirect chain. It sets the hop's proxy with
``ClientRequest.update_proxy``, before the connector picks a connection.

Credentials: for a tunnel, ``Proxy-Authorization`` goes on the ``CONNECT``
only (aiohttp's ``proxy_headers``), never inside the tunnel; for a
forwarded plain-HTTP request it goes on the request itself, which aiohttp
sends to the proxy. aiohttp's own ``proxy_auth`` (deprecated) and
``trust_env`` (which would also read ``~/.netrc`` and send its credentials
to targets) are not used.

Failures of the proxy come out as ``ProxyFailed``: aiohttp's
``ClientProxyConnectionError`` (the proxy cannot be reached),
``ClientHttpProxyError`` (CONNECT refused), and a ``407`` answer to a
forwarded request (the proxy's, not the target's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

from microcall.transports._aiohttp_resend import ConnectionDropped, Handler, Middleware
from microcall.transports._proxy import ProxyFailed, ProxySettings

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest, ClientResponse


def routing(settings: ProxySettings) -> Middleware:
    """The middleware that sends each hop through the proxy ``settings`` choose for it."""

    async def middleware(req: ClientRequest, handler: Handler) -> ClientResponse:
        proxy = settings.proxy_for(req.url)
        if proxy is None:
            return await handler(req)
        plain = req.url.scheme == "http"
        auth = proxy.authorization
        req.update_proxy(
            proxy.url, None, {"Proxy-Authorization": auth} if auth and not plain else None
        )
        if auth and plain:
            req.headers["Proxy-Authorization"] = auth
        try:
            response = await handler(req)
        except aiohttp.ClientError as error:
            cause = error.error if isinstance(error, ConnectionDropped) else error
            if isinstance(cause, aiohttp.ClientProxyConnectionError):
                raise ProxyFailed(proxy, f"cannot be reached: {cause.os_error}") from error
            if isinstance(cause, aiohttp.ClientHttpProxyError):
                raise ProxyFailed(proxy, status=cause.status, reason=cause.message) from error
            raise
        if plain and response.status == 407:
            response.close()
            raise ProxyFailed(proxy, status=407, reason=response.reason or "")
        return response

    return middleware
