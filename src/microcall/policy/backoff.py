"""Backoff between retries: capped exponential growth with full jitter, and Retry-After.

Full jitter (a uniform draw between zero and the exponential bound) spreads
the retries of many clients that failed together, so they do not return as
one synchronised wave; of the usual jitter schemes it does the least total
work (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from microcall._durations import to_seconds
from microcall.errors import ConfigurationError

# A server asking for more than this is treated as asking for this: beyond it,
# no deadline we would ever set is left anyway.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """``delay(n)`` for the n-th retry (0-based): uniform in [0, min(cap, base * multiplier**n)].

    Defaults: 50 ms, doubling, capped at 2 s: short enough to fit inside a
    typical service deadline of a few seconds, long enough to clear a blip.
    """

    base: float = 0.05
    multiplier: float = 2.0
    cap: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "base", to_seconds(self.base, name="backoff base", allow_zero=True)
        )
        object.__setattr__(self, "cap", to_seconds(self.cap, name="backoff cap", allow_zero=True))
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1.0):
            raise ConfigurationError(f"backoff multiplier must be >= 1, got {self.multiplier!r}")

    def delay(self, retry_number: int, rng: random.Random) -> float:
        if self.base == 0.0:
            return 0.0
        try:
            growth = self.multiplier**retry_number
        except OverflowError:  # far past the cap anyway
            growth = math.inf
        bound = min(self.cap, self.base * growth)
        return rng.uniform(0.0, bound) if self.jitter else bound


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
