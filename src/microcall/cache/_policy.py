"""CachePolicy: what a response cache stores, for how long, and when it may serve stale."""

from __future__ import annotations

from dataclasses import dataclass

from microcall._durations import to_seconds
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
                        500/502/503/504); 0 (default) never. A response's own
                        ``stale-if-error=N`` can only shorten it;
                        ``must-revalidate`` and ``no-cache`` forbid it.
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
    stale_if_error: float = 0.0
    keep_stale: float = DEFAULT_KEEP_STALE
    shared: bool = True
    methods: frozenset[str] = DEFAULT_METHODS
    max_body: int = DEFAULT_MAX_BODY
    coalesce: bool = True

    def __post_init__(self) -> None:
        for name in ("default_ttl", "ttl"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, to_seconds(value, name=name))
        for name in ("stale_if_error", "keep_stale"):
            value = to_seconds(getattr(self, name), name=name, allow_zero=True)
            object.__setattr__(self, name, value)
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
        if (
            isinstance(self.max_body, bool)
            or not isinstance(self.max_body, int)
            or self.max_body < 0
        ):
            raise ConfigurationError(f"max_body must be a byte count >= 0, got {self.max_body!r}")
