"""The aiohttp transport's way of carrying a call's cookies across the redirects it follows.

aiohttp follows redirects inside ``ClientSession.request`` and runs the
request's client middlewares for every hop. A call with cookies
(``Request.redirect_cookies``) gets one more middleware, made for that call:
a redirect's ``Set-Cookie`` goes to the call's jar as aiohttp leaves it, and
every hop after the first is sent with the Cookie header the jar gives for
its URL (aiohttp itself would keep the first hop's, or drop it on a new
origin). The session's own jar is a ``DummyCookieJar``: nothing is kept twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microcall._request import RedirectCookies
from microcall.transports._aiohttp_resend import Handler, Middleware

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest, ClientResponse

# The statuses aiohttp follows (with a Location): client.py's redirect loop.
_FOLLOWED = frozenset({301, 302, 303, 307, 308})


def carrying(hops: RedirectCookies) -> Middleware:
    """The middleware that carries ``hops`` (one call's cookies) from hop to hop."""
    first = True

    async def middleware(req: ClientRequest, handler: Handler) -> ClientResponse:
        nonlocal first
        if first:
            first = False  # sent with the Cookie header the client chose
        else:
            req.headers.popall("Cookie", None)
            cookie = hops.header_for(req.url)
            if cookie:
                req.headers["Cookie"] = cookie
        response = await handler(req)
        if response.status in _FOLLOWED and "Location" in response.headers:
            hops.keep(req.url, response.headers.getall("Set-Cookie", []))
        return response

    return middleware
