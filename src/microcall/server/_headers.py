"""Defensive parsing of the inbound deadline and priority headers.

Both headers come from the network, so nothing about them is trusted: a value
that is not exactly what the wire protocol allows is *malformed*. The parsers
never raise; they answer ``None`` (no header), a value, or :data:`MALFORMED`,
and the caller decides whether to ignore it (the default) or answer 400.

``X-Request-Timeout`` is decimal seconds remaining: ASCII digits with an
optional fraction and an optional exponent (aio-request writes Python's
``str(float)``, which is ``5e-05`` for very small values). Refused: signs,
``nan``, ``inf``, hex, underscores, non-ASCII digits (all of which ``float()``
would accept), values longer than :data:`MAX_TIMEOUT_TEXT` characters, and
values above :data:`MAX_HEADER_TIMEOUT`. A header sent more than once is
malformed: two deadlines do not say which one the caller meant (WSGI servers
join repeated headers with a comma, which the grammar refuses for the same
reason).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from typing import Final, Literal

from microcall.priority import Priority

TIMEOUT_HEADER: Final = "X-Request-Timeout"
PRIORITY_HEADER: Final = "X-Request-Priority"
DO_NOT_RETRY_HEADER: Final = "X-Do-Not-Retry"

# No call between services waits a day for its answer; a larger number is a
# bug or an attack, not a deadline, so it is refused rather than honoured.
MAX_HEADER_TIMEOUT: Final = 86_400.0

# Enough for any float Python prints ("0.0001234567890123456" is 21) with room
# to spare; bounds the work a hostile value can cause.
MAX_TIMEOUT_TEXT: Final = 32
_MAX_PRIORITY_TEXT: Final = 16

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
"""Returned by the parsers for a value that is present but unacceptable."""


def parse_timeout(values: Sequence[str]) -> float | Literal[Malformed.VALUE] | None:
    """Seconds remaining from the header's values: ``None`` if absent, or MALFORMED.

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
    """The priority named by the header's values: ``None`` if absent, or MALFORMED.

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
