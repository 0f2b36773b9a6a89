"""A stored response: what a cache backend keeps, and how it becomes a Response again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall._request import Request
from microcall._response import CacheStatus, Response
from microcall.cache._directives import header_value
from microcall.cache._keys import digest

# Roughly what an entry costs a memory backend beyond its body and headers.
ENTRY_OVERHEAD = 256


@dataclass(slots=True)
class Entry:
    """One stored response. Treat it as immutable: a memory backend hands one entry to many calls.

    (Not ``frozen``: a frozen dataclass pays an ``object.__setattr__`` per
    field, and an entry is built for every read from a shared store.)

    Times are seconds since the epoch, so an entry read by another host or
    after a restart means the same. ``born`` is when the response had age 0
    (its Date, corrected by its Age and the call's duration); it is fresh
    until ``fresh_until``, and may be served for ``stale_if_error`` seconds
    past that when the service fails, unless ``must_revalidate``.

    ``vary`` pairs each header named by the response's Vary with the value
    the request had (None: absent); ``nonce`` names the generation of the
    URL's variants, so entries stored before an invalidation cannot be found
    again. ``final_url`` is the response's URL when a redirect moved it ("" when
    it is the request's).
    """

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    final_url: str
    born: float
    fresh_until: float
    stale_if_error: float
    must_revalidate: bool
    vary: tuple[tuple[str, str | None], ...] = ()
    nonce: str = ""

    @property
    def size(self) -> int:
        """Approximate bytes held: what a memory backend bounds."""
        return (
            ENTRY_OVERHEAD
            + len(self.body)
            + len(self.url)
            + sum(len(name) + len(value) for name, value in self.headers)
        )

    def header(self, name: str) -> str | None:
        """The first value of a stored header (any case of the name), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def answers(self, method: str, url: str, headers: Mapping[str, str]) -> bool:
        """Whether this entry is the stored answer for a request with these method, URL and headers."""
        if self.method != method or self.url != url:
            return False
        return all(vary_value(headers, name) == value for name, value in self.vary)

    def to_response(self, request: Request, status: CacheStatus, now: float) -> Response:
        """A new Response from this entry, its Age header set to the entry's age at ``now``."""
        headers = CIMultiDict(self.headers)
        headers["Age"] = str(int(max(0.0, now - self.born)))
        response = Response(
            status_code=self.status,
            headers=CIMultiDictProxy(headers),
            content=self.body,
            url=URL(self.final_url, encoded=True) if self.final_url else request.url,
            request=request,
            reason=self.reason,
        )
        response.cache_status = status
        return response


def vary_value(headers: Mapping[str, str], name: str) -> str | None:
    """A request's value for a Vary'd header, as an entry keeps it: a digest, never the value.

    Whitespace trimmed first (RFC 9111 4.1 allows it). A Vary'd header is
    often a credential (``Vary: Authorization``, an API key, a cookie), and
    an entry sits in Redis or memcached, read by whoever reads them: only
    its digest is kept, which is all that matching needs.
    """
    value = header_value(headers, name)
    return None if value is None else digest(value.strip())
