"""HTTP caching semantics (RFC 9111) as pure decisions: nothing here awaits or reads a clock.

Theory of operation. For each call the cache asks, in order:

1. ``bypasses(request)``: a request with a body, or the caller's own
   conditional or range request, is sent as is: the cache neither answers
   nor stores it.
2. A stored entry for the request (same method, URL, and the values of the
   headers its Vary names) is **fresh** while ``now < fresh_until`` and the
   request's own ``no-cache`` / ``max-age`` / ``min-fresh`` allow it: it is the
   answer, and nothing is sent.
3. A stale entry with a validator is **revalidated**: the request goes out
   with ``If-None-Match`` / ``If-Modified-Since`` (``conditional_headers``); a
   304 refreshes the entry (``freshen``) and its stored body is the answer.
   A stale entry may still answer unchecked when the request accepts it
   (``max-stale``, ``accepts_stale``), or within the response's own
   ``stale-while-revalidate`` window (``revalidates_in_background``: the
   cache refreshes it meanwhile). A request with ``only-if-cached`` that
   finds no such entry is answered 504, nothing sent.
4. When the service fails (a CallError, or 500/502/503/504) a stale entry
   may still be served within its ``stale_if_error`` window
   (``serves_stale_on_error``), unless it must be revalidated.
5. Otherwise the new response is the answer, and ``build_entry`` decides
   whether and how it is stored: never ``no-store`` (request or response),
   ``Vary: *``, 206, 304, a server error, or a body over ``max_body``; in a
   shared cache never ``private``, and a request with Authorization only when
   the response allows it (section 3.5).

Freshness lifetime (section 4.2.1): the policy's TTL for the URL
(``ttl_by_url``, then ``ttl``) if set, else
``s-maxage`` (shared caches), ``max-age``, ``Expires - Date``, else the
policy's ``default_ttl`` for the statuses it covers, else zero (stored only
to be revalidated or served stale). ``no-cache`` makes it zero. The age at
arrival (section 4.2.3) is the larger of ``now - Date`` and ``Age`` plus the
call's duration; ``born = now - age``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from multidict import CIMultiDict
from yarl import URL

from microcall._request import Request
from microcall._response import Response
from microcall.cache._codec import storable
from microcall.cache._directives import (
    NONE,
    Directives,
    header_value,
    parse_age,
    parse_cache_control,
    parse_http_date,
    parse_vary,
)
from microcall.cache._entry import Entry, vary_value
from microcall.cache._policy import CachePolicy

# Statuses a cache may store without explicit freshness (RFC 9111 section
# 9.2.3, less 206: microcall does not combine ranges).
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})

# The failures after which stale-if-error applies (RFC 5861 section 4). A
# response with one of these statuses is never stored: it must not replace a
# good entry.
ERROR_STATUSES = frozenset({500, 502, 503, 504})

# A request carrying any of these is the caller's own conditional or partial
# request: its answer (a 304, a 206) is for the caller alone.
_CALLER_CONDITIONS = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"}
)

# Never stored: connection-level fields (RFC 9110 section 7.6.1), and
# Set-Cookie, which is one caller's and must not reach another through a cache.
_NOT_STORED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "set-cookie",
        "age",
    }
)

# A 304's fields that must not replace the stored ones (section 3.2): the
# stored body's length stays the stored body's length.
_NOT_UPDATED = _NOT_STORED | {"content-length"}

_IDENTITY = frozenset({"authorization", "cookie"})


def bypasses(request: Request) -> bool:
    """True when the cache must leave the request alone (a body, a caller's condition or range)."""
    if request.body is not None:
        return True
    return any(name.lower() in _CALLER_CONDITIONS for name in request.headers)


def has_authorization(headers: Mapping[str, str]) -> bool:
    return any(name.lower() == "authorization" for name in headers)


def identity(headers: Mapping[str, str]) -> str:
    """The request's credentials (Authorization, Cookie) as one string, for a private cache's key."""
    found = sorted(
        f"{name.lower()}={value}" for name, value in headers.items() if name.lower() in _IDENTITY
    )
    return "\n".join(found)


def is_fresh(entry: Entry, now: float, wanted: Directives = NONE) -> bool:
    """Whether ``entry`` may answer a request with directives ``wanted`` at ``now`` unchecked."""
    if wanted is NONE:
        return now < entry.fresh_until
    if wanted.no_cache:
        return False
    if wanted.max_age is not None and now - entry.born > wanted.max_age:
        return False
    if wanted.min_fresh is not None and entry.fresh_until - now < wanted.min_fresh:
        return False
    return now < entry.fresh_until


def accepts_stale(entry: Entry, now: float, wanted: Directives) -> bool:
    """Whether a request's ``max-stale`` lets a stale ``entry`` answer it unchecked (section 5.2.1.2)."""
    if wanted.max_stale is None or wanted.no_cache or entry.must_revalidate:
        return False
    if wanted.max_age is not None and now - entry.born > wanted.max_age:
        return False
    return now < entry.fresh_until + wanted.max_stale


def revalidates_in_background(entry: Entry, now: float, wanted: Directives) -> bool:
    """Whether stale ``entry`` may answer now while it is refreshed (RFC 5861 ``stale-while-revalidate``).

    The window is the stored response's own; a request that asks for
    something fresher (``no-cache``, ``max-age``, ``min-fresh``) is not given it.
    """
    if entry.must_revalidate or not (
        wanted is NONE
        or (wanted.no_cache is False and wanted.max_age is None and wanted.min_fresh is None)
    ):
        return False
    window = parse_cache_control(entry.header("Cache-Control")).stale_while_revalidate
    return window is not None and now < entry.fresh_until + window


def serves_stale_on_error(entry: Entry, now: float, wanted: Directives = NONE) -> bool:
    """Whether a stale ``entry`` may be served because the service failed (RFC 5861)."""
    if entry.must_revalidate or entry.stale_if_error <= 0.0 or wanted.no_cache:
        return False
    return now <= entry.fresh_until + entry.stale_if_error


def conditional_headers(entry: Entry) -> dict[str, str]:
    """The validators to send when revalidating ``entry`` (empty: it has none)."""
    headers: dict[str, str] = {}
    etag = entry.header("ETag")
    if etag:
        headers["If-None-Match"] = etag
    modified = entry.header("Last-Modified")
    if modified:
        headers["If-Modified-Since"] = modified
    return headers


def storage_ttl(entry: Entry, policy: CachePolicy, now: float) -> float:
    """How long a backend should keep ``entry``: its freshness, then what stale use it has left."""
    revalidatable = entry.header("ETag") is not None or entry.header("Last-Modified") is not None
    keep = max(entry.stale_if_error, policy.keep_stale if revalidatable else 0.0)
    if not entry.must_revalidate:
        window = parse_cache_control(entry.header("Cache-Control")).stale_while_revalidate
        if window is not None:
            keep = max(keep, window)
    return entry.fresh_until - now + keep


def build_entry(
    request: Request,
    response: Response,
    *,
    now: float,
    policy: CachePolicy,
    nonce: str,
    wanted: Directives = NONE,
    url: str | None = None,
) -> Entry | None:
    """The entry to store for ``response`` to ``request`` at ``now``, or None if it must not be.

    ``url`` is the request's URL as the cache keys it (``CachePolicy.cache_url``).
    """
    if wanted.no_store or len(response.content) > policy.max_body:
        return None
    return _entry(
        request,
        url=str(request.url) if url is None else url,
        status=response.status_code,
        reason=response.reason,
        headers=response.headers,
        body=response.content,
        final_url=response.url,
        elapsed=response.elapsed,
        now=now,
        policy=policy,
        nonce=nonce,
    )


def freshen(
    entry: Entry,
    not_modified: Response,
    request: Request,
    *,
    now: float,
    policy: CachePolicy,
) -> Entry | None:
    """``entry`` updated by a 304 (section 4.3.4); None if the 304 is for another representation."""
    new_etag = header_value(not_modified.headers, "ETag")
    old_etag = entry.header("ETag")
    if new_etag and old_etag and _weak(new_etag) != _weak(old_etag):
        return None
    merged: CIMultiDict[str] = CIMultiDict(entry.headers)
    replaced: set[str] = set()
    for name, value in not_modified.headers.items():
        lowered = name.lower()
        if lowered in _NOT_UPDATED:
            continue
        if lowered not in replaced:
            merged.popall(name, None)
            replaced.add(lowered)
        merged.add(name, value)
    return _entry(
        request,
        url=entry.url,
        status=entry.status,
        reason=entry.reason,
        headers=merged,
        body=entry.body,
        final_url=entry.final_url or request.url,
        elapsed=not_modified.elapsed,
        now=now,
        policy=policy,
        nonce=entry.nonce,
    )


def _entry(
    request: Request,
    *,
    url: str,
    status: int,
    reason: str,
    headers: Mapping[str, str],
    body: bytes,
    final_url: object,
    elapsed: float,
    now: float,
    policy: CachePolicy,
    nonce: str,
) -> Entry | None:
    if status < 200 or status in (206, 304) or status in ERROR_STATUSES:
        return None
    control = parse_cache_control(header_value(headers, "Cache-Control"))
    if control.no_store or (policy.shared and control.private):
        return None
    vary_names = parse_vary(header_value(headers, "Vary"))
    if vary_names is None:  # Vary: * - no later request can be known to match
        return None
    if (
        policy.shared
        and has_authorization(request.headers)
        and not (control.public or control.s_maxage is not None or control.must_revalidate)
    ):
        return None

    date = parse_http_date(header_value(headers, "Date"))
    apparent_age = max(0.0, now - date) if date is not None else 0.0
    delay = elapsed if math.isfinite(elapsed) and elapsed > 0 else 0.0
    age = max(apparent_age, parse_age(header_value(headers, "Age")) + delay)
    born = now - age

    imposed = policy.ttl_for(url)
    if imposed is not None and status in policy.ttl_statuses:
        lifetime = imposed
        must_revalidate = False
    else:
        explicit = _explicit_lifetime(control, headers, date, now, policy.shared)
        if explicit is None and not (status in HEURISTICALLY_CACHEABLE or control.public):
            return None
        if control.no_cache:
            lifetime = 0.0
        elif explicit is not None:
            lifetime = explicit
        elif policy.default_ttl is not None and status in policy.ttl_statuses:
            lifetime = policy.default_ttl
        else:
            lifetime = 0.0
        must_revalidate = (
            control.must_revalidate
            or control.no_cache
            or (policy.shared and (control.proxy_revalidate or control.s_maxage is not None))
        )

    stale_window = 0.0
    if not must_revalidate:
        own = control.stale_if_error
        if policy.stale_if_error is None:  # RFC 5861: the response's own word
            stale_window = 0.0 if own is None else own
        else:
            stale_window = policy.stale_if_error if own is None else min(policy.stale_if_error, own)
    fresh_until = born + lifetime
    validated = header_value(headers, "ETag") or header_value(headers, "Last-Modified")
    if fresh_until <= now and not validated and stale_window <= 0.0:
        return None  # of no use: never fresh, nothing to revalidate with, no stale use

    kept = tuple(
        (name, value) for name, value in headers.items() if name.lower() not in _NOT_STORED
    )
    vary = tuple((name, vary_value(request.headers, name)) for name in vary_names)
    texts = [reason, *(text for pair in kept for text in pair)]
    texts += [value for _, value in vary if value is not None]
    if not all(storable(text) for text in texts):
        return None  # a field no HTTP peer could have sent: not worth keeping
    target = url
    final = str(final_url)
    # The request's own URL is stored as the key's, parameters left out. Where
    # a redirect led may repeat the request's ignored parameters (a token):
    # the first caller's, not the next's.
    final = target if final == str(request.url) else policy.cache_url(URL(final, encoded=True))
    return Entry(
        method=request.method,
        url=target,
        status=status,
        reason=reason,
        headers=kept,
        body=body if request.method != "HEAD" else b"",
        final_url="" if final == target else final,
        born=born,
        fresh_until=fresh_until,
        stale_if_error=stale_window,
        must_revalidate=must_revalidate,
        vary=vary,
        nonce=nonce if vary_names else "",
    )


def _explicit_lifetime(
    control: Directives,
    headers: Mapping[str, str],
    date: float | None,
    now: float,
    shared: bool,
) -> float | None:
    if shared and control.s_maxage is not None:
        return control.s_maxage
    if control.max_age is not None:
        return control.max_age
    expires_text = header_value(headers, "Expires")
    if expires_text is None:
        return None
    expires = parse_http_date(expires_text)
    if expires is None:  # "0" and other invalid dates mean: already expired
        return 0.0
    return max(0.0, expires - (date if date is not None else now))


def _weak(etag: str) -> str:
    """An entity tag for weak comparison (RFC 9110 section 8.8.3.2)."""
    text = etag.strip()
    return text[2:] if text.startswith("W/") else text
