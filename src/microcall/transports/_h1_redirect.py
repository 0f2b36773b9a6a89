"""Redirects of the HTTP/1.1 transport, without I/O: whether an answer is one, and the next hop.

The event-loop exchange (``h1``) and the blocking one (``_h1_direct``) follow
redirects alike: a 301, 302, 303, 307 or 308 with a Location, at most
``MAX_REDIRECTS`` of them. A 303 (and a 301 or 302 answering a POST) turns
the call into a GET without a body; a 307 or 308 sends the same method and
body again, unless the body was read once (a RedirectError). Leaving the
origin drops the caller's credentials (``Authorization``, ``Cookie``) and
the name a replica stood for; the client's jar, when it keeps cookies,
gives each hop the cookies of its own URL (``Request.redirect_cookies``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from yarl import URL

from microcall._body import Body, cannot_redirect, may_resend
from microcall._request import Request
from microcall.transports._h1_wire import ResponseReader
from microcall.transports._settings import redirect_chain

# aiohttp's limit, which the other transports' users know.
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}


class Redirected(Exception):
    """A redirect that cannot be followed: a bad Location, a loop, or too long a chain."""


class Hop(NamedTuple):
    """Where a followed redirect goes, and what it sends."""

    url: URL
    method: str
    body: bytes | Body | None
    headers: Mapping[str, str]
    name: URL | None


def location_of(reader: ResponseReader) -> str | None:
    """The Location of a redirect (a status in ``REDIRECT_STATUSES``); None: a final answer.

    Callers test the status first: most answers are not redirects, and
    that test costs less than this call.
    """
    if reader.status not in REDIRECT_STATUSES:
        return None
    return next((v for k, v in reader.headers if k.lower() == "location"), None)


def next_hop(
    request: Request,
    reader: ResponseReader,
    location: str,
    hop: Hop,
    visited: list[URL],
) -> Hop:
    """The hop after ``hop``, which ``reader`` answered with a redirect to ``location``.

    ``visited`` gets ``hop.url``; raises ``Redirected`` when the chain is too
    long, the Location cannot be followed or the body cannot be sent again.
    """
    url, method, body, headers, name = hop
    visited.append(url)
    url = redirect_target(request, url, location)
    if len(visited) >= MAX_REDIRECTS:
        raise Redirected(redirect_chain(request.endpoint, [*visited, url]))
    status = reader.status
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
    elif not may_resend(body):
        raise Redirected(cannot_redirect(request))
    if url.origin() != visited[-1].origin():
        # Not the replica the hop went to. The service's own name (a replica
        # reached by address, redirecting to its service's URL) is the same
        # origin: the credentials go on, the name is the URL's own now. Any
        # other origin gets neither the name nor the caller's credentials.
        dropped = (
            ("host",)
            if name is not None and url.origin() == name.origin()
            else ("host", "authorization", "cookie")
        )
        headers = {key: value for key, value in headers.items() if key.lower() not in dropped}
        name = None
    if (hops := request.redirect_cookies) is not None:
        hops.keep(visited[-1], [v for k, v in reader.headers if k.lower() == "set-cookie"])
        headers = with_cookie(headers, hops.header_for(url))
    return Hop(url, method, body, headers, name)


def redirect_target(request: Request, url: URL, location: str) -> URL:
    """The URL a Location given by ``url``'s answer names; ``Redirected`` if it cannot be followed."""
    try:
        given = URL(location)
        target = url.join(given)
    except ValueError as error:
        raise Redirected(
            f"{request.endpoint} redirected to a Location that cannot be followed: {error}"
        ) from error
    if (given.scheme and not given.host) or target.scheme not in DEFAULT_PORTS or not target.host:
        raise Redirected(
            f"{request.endpoint} redirected to a Location that cannot be followed: "
            f"{target.scheme or 'no'} scheme, {'a' if target.host else 'no'} host"
        )
    return target


def with_cookie(headers: Mapping[str, str], cookie: str | None) -> dict[str, str]:
    """``headers`` with ``cookie`` as their Cookie header (and none when it is None)."""
    kept = {key: value for key, value in headers.items() if key.lower() != "cookie"}
    if cookie:
        kept["Cookie"] = cookie
    return kept
