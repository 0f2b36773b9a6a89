"""Reading caching headers: Cache-Control, Pragma, Expires, Date, Age and Vary.

Every value here comes from the network, so nothing in this module raises on
what it reads. A malformed directive is dropped; a malformed number in a
freshness directive counts as zero (RFC 9111 section 4.2.1: when in doubt,
treat the response as stale); a directive given twice keeps its most
restrictive value; an unparseable Expires is a date in the past (section
5.3). Numbers are capped at 2**31 seconds, as section 1.2.2 allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# RFC 9111 section 1.2.2: a delta-seconds too large to represent is 2**31.
MAX_DELTA_SECONDS = 2_147_483_648.0

# token ["=" (token / quoted-string)], RFC 9110 section 5.6; commas inside a
# quoted string (no-cache="Set-Cookie, Foo") do not split directives.
_DIRECTIVE = re.compile(
    r"""\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,\s"]*))?\s*(?:,|$)"""
)


@dataclass(frozen=True, slots=True)
class Directives:
    """The Cache-Control directives microcall acts on, of a request or a response.

    Durations are seconds; None means the directive was absent. The
    qualified forms (``no-cache="Set-Cookie"``, ``private="..."``) are read
    as their unqualified, stricter, forms, which the RFC allows.
    """

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    max_age: float | None = None
    s_maxage: float | None = None
    min_fresh: float | None = None
    stale_if_error: float | None = None
    stale_while_revalidate: float | None = None
    max_stale: float | None = None
    only_if_cached: bool = False


NONE = Directives()

_FLAGS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "only-if-cached": "only_if_cached",
}
_SECONDS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "min-fresh": "min_fresh",
    "stale-if-error": "stale_if_error",
    "stale-while-revalidate": "stale_while_revalidate",
    "max-stale": "max_stale",
}
# A bare max-stale accepts a response stale by any amount (RFC 9111 section 5.2.1.2).
_UNBOUNDED_WITHOUT_VALUE = frozenset({"max_stale"})


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Every value of header ``name`` joined with commas, or None; any case of the name.

    aiohttp's headers are a case-insensitive multidict (``getall``); a plain
    dict given by a caller is searched by lower-cased name.
    """
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values: list[str] = getall(name, [])
        return ", ".join(values) if values else None
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def parse_cache_control(value: str | None) -> Directives:
    """The directives in one (comma-joined) Cache-Control value; unknown ones are ignored."""
    if not value:
        return NONE
    flags: dict[str, bool] = {}
    seconds: dict[str, float] = {}
    position = 0
    length = len(value)
    while position < length:
        match = _DIRECTIVE.match(value, position)
        if match is None:
            # Garbage up to the next comma: skip it and keep reading.
            comma = value.find(",", position)
            if comma < 0:
                break
            position = comma + 1
            continue
        position = match.end()
        name = match.group(1).lower()
        if name in _FLAGS:
            flags[_FLAGS[name]] = True
        elif name in _SECONDS:
            field = _SECONDS[name]
            raw = match.group(2)
            if raw is None and field in _UNBOUNDED_WITHOUT_VALUE:
                parsed = MAX_DELTA_SECONDS
            else:
                parsed = _delta_seconds(raw)
            seconds[field] = parsed if field not in seconds else min(seconds[field], parsed)
    if not flags and not seconds:
        return NONE
    return Directives(**flags, **seconds)  # type: ignore[arg-type]


def request_directives(headers: Mapping[str, str]) -> Directives:
    """A request's Cache-Control; ``Pragma: no-cache`` counts when Cache-Control is absent."""
    control = header_value(headers, "Cache-Control")
    if control is not None:
        return parse_cache_control(control)
    pragma = header_value(headers, "Pragma")
    if pragma is not None and "no-cache" in pragma.lower():
        return Directives(no_cache=True)
    return NONE


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch for an HTTP-date (any of RFC 9110's three forms), or None."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form: every HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    try:
        stamp = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if math.isfinite(stamp) else None


def parse_age(value: str | None) -> float:
    """The Age header in seconds; 0 when absent or malformed."""
    if not value:
        return 0.0
    text = value.split(",")[0].strip()
    if not (text.isascii() and text.isdigit()):
        return 0.0
    return min(float(text), MAX_DELTA_SECONDS)


def parse_vary(value: str | None) -> tuple[str, ...] | None:
    """Vary's header names, lower-cased, sorted, without repeats; None for ``Vary: *``."""
    if not value:
        return ()
    names: set[str] = set()
    for part in value.split(","):
        name = part.strip().lower()
        if name == "*":
            return None
        if name:
            names.add(name)
    return tuple(sorted(names))


def _delta_seconds(raw: str | None) -> float:
    if raw is None:
        return 0.0
    text = raw.strip('"') if raw.startswith('"') else raw
    if not (text.isascii() and text.isdigit()):
        return 0.0
    return min(float(text), MAX_DELTA_SECONDS)
