"""CachePolicy: what a response cache stores, for how long, and when it may serve stale."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

from microcall._durations import to_seconds
from microcall._validate import whole
from microcall.errors import ConfigurationError

# RFC 9111 section 9.2.3's heuristically cacheable statuses, less those that
# surprise between services: a 404 cached by a default TTL would hide an
# object created a moment later, and 405 / 414 / 501 say nothing worth
# keeping. A service that wants them cached says so with max-age.
DEFAULT_TTL_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 410})

# Safe methods whose responses are reusable (RFC 9110 section 9.2.1).
DEFAULT_METHODS = frozenset({"GET", "HEAD"})

# An entry with a validator (ETag, Last-Modified) is kept this long past its
# freshness, so the next call can revalidate it with a 304 instead of fetching
# the body again; five minutes covers the next few misses of a popular entry
# without keeping dead ones long.
DEFAULT_KEEP_STALE = 300.0

# Bodies larger than this are not stored: memcached's item limit is 1 MiB,
# and a cache full of a few huge bodies serves few calls.
DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """How a :class:`ResponseCache` applies HTTP caching (RFC 9111) to calls.

    ``default_ttl``     seconds a response stays fresh when it has no freshness of
                        its own (no max-age, s-maxage or Expires): for services
                        that send no caching headers. None (default): such a
                        response is stored only to be revalidated or served stale.
    ``ttl``             seconds every response stays fresh, whatever its
                        freshness headers (max-age, Expires, no-cache,
                        must-revalidate) say. ``no-store``, and ``private`` in a
                        shared cache, are still obeyed: they say whether the
                        data may be kept at all.
    ``ttl_statuses``    the statuses ``default_ttl`` and ``ttl`` apply to; any
                        other status is cached only if its own headers say so.
    ``stale_if_error``  seconds past its freshness an entry may still be served
                        when the service fails (a transport error, a deadline,
                        500/502/503/504); 0 never. A response's own
                        ``stale-if-error=N`` can only shorten it. None
                        (default): the response's own ``stale-if-error=N``
                        alone (RFC 5861), never when it has none.
                        ``must-revalidate`` and ``no-cache`` forbid it.
    ``ttl_by_url``      glob patterns of URLs (``fnmatch``: ``*`` matches any
                        run, ``/`` included) mapped to seconds: a response to
                        the first matching URL is fresh that long, as with
                        ``ttl``; other URLs follow ``ttl`` or their headers.
    ``ignore_params``   query parameters left out of the cache key (tokens,
                        tracking ids): calls differing only in them share
                        one entry, and their values are never stored.
    ``keep_stale``      seconds an entry with a validator is kept past its
                        freshness, for revalidation with a 304.
    ``shared``          True (default): the rules of a shared cache (the store may
                        be shared by hosts and serves every caller of the
                        client): ``private`` responses are not stored,
                        ``s-maxage`` counts, and a request with Authorization is
                        stored only when the response allows it (``public``,
                        ``s-maxage``, ``must-revalidate``). False: a private cache.
    ``methods``         methods whose responses are cached: GET and HEAD, or one of them.
    ``max_body``        bodies larger than this many bytes are not stored.
    ``coalesce``        concurrent identical calls send one request (single flight).

    Given to a call (``client.get(url, cache=CachePolicy(ttl=30))``) a policy
    replaces the cache's own for that call.
    """

    default_ttl: float | None = None
    ttl: float | None = None
    ttl_statuses: frozenset[int] = DEFAULT_TTL_STATUSES
    stale_if_error: float | None = None
    ttl_by_url: Mapping[str, float] = field(default_factory=dict, hash=False)
    ignore_params: frozenset[str] = frozenset()
    keep_stale: float = DEFAULT_KEEP_STALE
    shared: bool = True
    methods: frozenset[str] = DEFAULT_METHODS
    max_body: int = DEFAULT_MAX_BODY
    coalesce: bool = True
    _url_ttls: tuple[tuple[re.Pattern[str], float], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        for name in ("default_ttl", "ttl"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, to_seconds(value, name=name))
        if self.stale_if_error is not None:
            seconds = to_seconds(self.stale_if_error, name="stale_if_error", allow_zero=True)
            object.__setattr__(self, "stale_if_error", seconds)
        keep = to_seconds(self.keep_stale, name="keep_stale", allow_zero=True)
        object.__setattr__(self, "keep_stale", keep)
        given_ttls: object = self.ttl_by_url
        if not isinstance(given_ttls, Mapping) or not all(
            isinstance(pattern, str) and pattern for pattern in given_ttls
        ):
            raise ConfigurationError(
                f"ttl_by_url must map URL glob patterns to seconds, got {given_ttls!r}"
            )
        ttls = {
            pattern: to_seconds(seconds, name=f"ttl_by_url[{pattern!r}]")
            for pattern, seconds in given_ttls.items()
        }
        object.__setattr__(self, "ttl_by_url", ttls)
        compiled = tuple(
            (re.compile(fnmatch.translate(pattern)), seconds) for pattern, seconds in ttls.items()
        )
        object.__setattr__(self, "_url_ttls", compiled)
        ignored: object = self.ignore_params
        if isinstance(ignored, str) or not all(
            isinstance(name, str) and name for name in self.ignore_params
        ):
            raise ConfigurationError(
                f"ignore_params must be a set of query parameter names, got {ignored!r}"
            )
        object.__setattr__(self, "ignore_params", frozenset(self.ignore_params))
        given: object = self.methods
        if isinstance(given, str) or not all(
            isinstance(method, str) and method for method in self.methods
        ):
            raise ConfigurationError(f"methods must be a set of method names, got {given!r}")
        object.__setattr__(self, "methods", frozenset(method.upper() for method in self.methods))
        # The key holds no body, and OPTIONS answers are not reusable (RFC 9110 9.3.7).
        other = self.methods - DEFAULT_METHODS
        if other:
            raise ConfigurationError(
                f"only GET and HEAD responses can be cached, not {', '.join(sorted(other))}"
            )
        if not all(
            isinstance(status, int) and 200 <= status <= 599 and status not in (206, 304)
            for status in self.ttl_statuses
        ):
            raise ConfigurationError(
                f"ttl_statuses must be final statuses other than 206 and 304, got {self.ttl_statuses!r}"
            )
        object.__setattr__(self, "ttl_statuses", frozenset(self.ttl_statuses))
        whole("max_body", self.max_body, minimum=0, what="a byte count")

    def ttl_for(self, url: str) -> float | None:
        """The freshness this policy imposes on a response to ``url`` (None: its headers decide)."""
        for pattern, seconds in self._url_ttls:
            if pattern.match(url):
                return seconds
        return self.ttl

    def cache_url(self, url: URL) -> str:
        """``url`` as the cache keys and stores it: without the ``ignore_params`` or user-info.

        User-info is never sent (credentials go in ``auth=``), so it is no
        part of what the answer depends on, and a password is not stored.
        """
        if url.raw_user is not None:
            url = url.with_user(None)
        if self.ignore_params and url.query_string:
            return str(url.without_query_params(*self.ignore_params))
        return str(url)
