"""The httpx transport's way of carrying a call's cookies across the redirects it follows.

httpx follows redirects inside ``AsyncClient.send``, and takes the Cookie
header off every hop after the first (to send its own jar's instead, which
here is always empty). A call with cookies (``Request.redirect_cookies``)
is sent with a :class:`Hops` in its request's extensions, which httpx hands
on to each hop; the client's event hooks, which httpx runs for every hop,
keep a redirect's ``Set-Cookie`` in the call's jar and give the next hop
the Cookie header the jar has for its URL.
"""

from __future__ import annotations

import httpx
from yarl import URL

from microcall._request import RedirectCookies

# The key of a call's Hops in its httpx request's extensions (httpcore reads only its own keys).
EXTENSION = "microcall.redirect_cookies"


class Hops:
    """One call's cookies, and whether a redirect has been followed yet."""

    __slots__ = ("cookies", "redirected")

    def __init__(self, cookies: RedirectCookies) -> None:
        self.cookies = cookies
        self.redirected = False  # the first hop goes with the Cookie header the client chose


def carry_cookies(request: httpx.Request) -> None:
    """For the request hook: a hop after a redirect carries the jar's cookies for its URL."""
    hops: Hops | None = request.extensions.get(EXTENSION)
    if hops is None or not hops.redirected:
        return
    request.headers.pop("Cookie", None)
    cookie = hops.cookies.header_for(_url(request.url))
    if cookie:
        request.headers["Cookie"] = cookie


async def keep_cookies(response: httpx.Response) -> None:
    """A response hook: what a redirect that will be followed sets goes to the call's jar."""
    hops: Hops | None = response.request.extensions.get(EXTENSION)
    if hops is None or not response.has_redirect_location:
        return
    hops.cookies.keep(_url(response.request.url), response.headers.get_list("Set-Cookie"))
    hops.redirected = True


def _url(url: httpx.URL) -> URL:
    return URL(str(url), encoded=True)
