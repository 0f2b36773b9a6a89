"""The wire protocol: every header and metadata name microcall reads or writes, in one place.

Clients and servers, HTTP and gRPC, all read this module, so one table of
names (docs/architecture.md, and DESIGN's wire protocol) holds everywhere:

============  =============================  ==========================  ======================
what          HTTP header                    gRPC                        written by
============  =============================  ==========================  ======================
time left     ``X-Request-Timeout: 1.499``   the call's own deadline     every client attempt
priority      ``X-Request-Priority: high``   ``x-request-priority``      clients, when they have one
do not retry  ``X-Do-Not-Retry: 1``          (a non-retriable status)    servers refusing work
backoff hint  ``Retry-After: 1``             ``grpc-retry-pushback-ms``  servers shedding load
idempotent    ``Idempotency-Key``                                        callers (makes a POST replayable)
============  =============================  ==========================  ======================

Everything that comes from the network is parsed defensively here: the
parsers never raise; they answer ``None`` (absent), a value, or a marker
(:data:`MALFORMED`, :data:`DO_NOT_RETRY`) the caller decides what to do with.

``X-Request-Timeout`` is decimal seconds remaining: ASCII digits with an
optional fraction and an optional exponent (aio-request writes Python's
``str(float)``, which is ``5e-05`` for very small values). Refused: signs,
``nan``, ``inf``, hex, underscores, non-ASCII digits (all of which ``float()``
would accept), values longer than :data:`MAX_TIMEOUT_TEXT` characters, and
values above :data:`MAX_HEADER_TIMEOUT`. A header sent more than once is
malformed: two deadlines do not say which one the caller meant (WSGI servers
join repeated headers with a comma, which the grammar refuses for the same
reason).

``grpc-retry-pushback-ms`` (gRFC A6): a non-negative integer is the least
time to wait before the next attempt; anything else (negative, not a number,
repeated) means *do not retry*.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final, Literal

from microcall.priority import Priority

# ------------------------------------------------------------------ names

TIMEOUT_HEADER: Final = "X-Request-Timeout"
PRIORITY_HEADER: Final = "X-Request-Priority"
DO_NOT_RETRY_HEADER: Final = "X-Do-Not-Retry"
RETRY_AFTER_HEADER: Final = "Retry-After"
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"

# ASGI servers give header names as lower-case bytes (ASGI spec, "HTTP" scope).
TIMEOUT_HEADER_BYTES: Final = TIMEOUT_HEADER.lower().encode("ascii")
PRIORITY_HEADER_BYTES: Final = PRIORITY_HEADER.lower().encode("ascii")

# gRPC metadata keys are lower case (HTTP/2 header names).
PRIORITY_METADATA: Final = PRIORITY_HEADER.lower()
PUSHBACK_METADATA: Final = "grpc-retry-pushback-ms"

# ------------------------------------------------------------------ limits

# No call between services waits a day for its answer; a larger number is a
# bug or an attack, not a deadline, so it is refused rather than honoured.
MAX_HEADER_TIMEOUT: Final = 86_400.0

# Enough for any float Python prints ("0.0001234567890123456" is 21) with room
# to spare; bounds the work a hostile value can cause.
MAX_TIMEOUT_TEXT: Final = 32
_MAX_PRIORITY_TEXT: Final = 16

# A server asking for more than this is treated as asking for this: beyond it,
# no deadline we would ever set is left anyway.
MAX_RETRY_AFTER: Final = 3600.0
# The same cap for gRPC's pushback.
MAX_PUSHBACK: Final = MAX_RETRY_AFTER
# Enough digits for an hour in milliseconds and then some; bounds the work a
# hostile value can cause.
_MAX_PUSHBACK_TEXT: Final = 12

_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_PRIORITIES: Final = {p.value: p for p in Priority}
# Optional whitespace around a field value (RFC 9110, section 5.5).
_OWS: Final = " \t"


class Malformed(enum.Enum):
    """The marker for a header value that is present but not acceptable."""

    VALUE = "malformed"

    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED: Final = Malformed.VALUE
"""Returned by the header parsers for a value that is present but unacceptable."""


class Pushback(enum.Enum):
    """The marker for a pushback that says: do not retry."""

    DO_NOT_RETRY = "do not retry"

    def __repr__(self) -> str:
        return "DO_NOT_RETRY"


DO_NOT_RETRY: Final = Pushback.DO_NOT_RETRY

ParsedPushback = float | Literal[Pushback.DO_NOT_RETRY] | None

# ------------------------------------------------------------------ writing


def attempt_headers(
    headers: Mapping[str, str], timeout: float, priority: str | None
) -> dict[str, str]:
    """An HTTP attempt's headers: the request's, its time left, and the call's priority (if any).

    The attempt's own time, not the call's: the server should not work longer
    than this attempt will wait. Rounded down to the millisecond (never up,
    never below zero): a hop must not be granted more than the caller has.

    >>> attempt_headers({}, 1.4999, "low")
    {'X-Request-Timeout': '1.499', 'X-Request-Priority': 'low'}
    """
    # int() truncates, the cheapest floor of a positive number (timeit: ~80 ns
    # over the rounding format alone).
    millis = int(timeout * 1000)
    sent = {**headers, TIMEOUT_HEADER: f"{millis / 1000 if millis > 0 else 0.0:.3f}"}
    if priority is not None:
        # A call nobody gave a priority says nothing: the server's default applies.
        sent[PRIORITY_HEADER] = priority
    return sent


def pushback_text(seconds: int) -> str:
    """The ``grpc-retry-pushback-ms`` value for a wait of ``seconds``."""
    return str(seconds * 1000)


# ------------------------------------------------------------------ reading


def parse_timeout(values: Sequence[str]) -> float | Literal[Malformed.VALUE] | None:
    """Seconds remaining from ``X-Request-Timeout`` values: ``None`` if absent, or MALFORMED.

    >>> parse_timeout(["1.499"]), parse_timeout([]), parse_timeout(["-1"])
    (1.499, None, MALFORMED)
    """
    if not values:
        return None
    if len(values) != 1:
        return MALFORMED
    text = values[0]
    if len(text) > MAX_TIMEOUT_TEXT:
        return MALFORMED
    text = text.strip(_OWS)
    if _DECIMAL.fullmatch(text) is None:
        return MALFORMED
    seconds = float(text)
    if not math.isfinite(seconds) or seconds > MAX_HEADER_TIMEOUT:
        return MALFORMED
    return seconds


def parse_priority(values: Sequence[str]) -> Priority | Literal[Malformed.VALUE] | None:
    """The priority named by ``X-Request-Priority`` values: ``None`` if absent, or MALFORMED.

    Case-insensitive, as aio-request sends lower case and people type anything.
    """
    if not values:
        return None
    if len(values) != 1:
        return MALFORMED
    text = values[0]
    if len(text) > _MAX_PRIORITY_TEXT:
        return MALFORMED
    # .lower() of a non-ASCII string can produce ASCII ("K" (Kelvin) -> "k"),
    # so the dictionary lookup alone would let some non-ASCII spellings in.
    if not text.isascii():
        return MALFORMED
    found = _PRIORITIES.get(text.strip(_OWS).lower())
    return MALFORMED if found is None else found


def says_do_not_retry(value: str | None) -> bool:
    """Whether an ``X-Do-Not-Retry`` value asks the client not to retry."""
    return value is not None and value.strip().lower() in ("1", "true")


def parse_retry_after(value: str | None, *, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date), or None.

    Anything malformed, negative or non-finite is ignored (None) rather than
    trusted: the header comes from the network.
    """
    if not value:
        return None
    text = value.strip()
    if text.isdigit() and text.isascii():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form: RFC 9110 says every HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    return min(max(when.timestamp() - now_epoch, 0.0), MAX_RETRY_AFTER)


def parse_pushback(values: Iterable[str | bytes]) -> ParsedPushback:
    """Seconds to wait from ``grpc-retry-pushback-ms`` values; None if absent; DO_NOT_RETRY.

    >>> parse_pushback(["250"]), parse_pushback([]), parse_pushback(["-1"]) is DO_NOT_RETRY
    (0.25, None, True)
    """
    found = list(values)
    if not found:
        return None
    if len(found) != 1:
        return DO_NOT_RETRY
    value = found[0]
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if not text or len(text) > _MAX_PUSHBACK_TEXT or not (text.isascii() and text.isdigit()):
        return DO_NOT_RETRY
    return min(int(text) / 1000.0, MAX_PUSHBACK)


def pushback_of(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> ParsedPushback:
    """The pushback in a call's trailing metadata (see :func:`parse_pushback`)."""
    if not trailing_metadata:
        return None
    return parse_pushback(value for key, value in trailing_metadata if key == PUSHBACK_METADATA)
