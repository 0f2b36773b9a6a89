"""Backoff between retries: capped exponential growth with full jitter.

Full jitter (a uniform draw between zero and the exponential bound) spreads
the retries of many clients that failed together, so they do not return as
one synchronised wave; of the usual jitter schemes it does the least total
work (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from microcall._durations import to_seconds
from microcall._validate import flag, number

# Retry-After is read with the other wire names; kept importable from here.
from microcall._wire import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from microcall._wire import parse_retry_after as parse_retry_after


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
        number("backoff multiplier", self.multiplier, minimum=1.0)
        flag("backoff jitter", self.jitter)

    def delay(self, retry_number: int, rng: random.Random) -> float:
        if self.base == 0.0:
            return 0.0
        try:
            growth = self.multiplier**retry_number
        except OverflowError:  # far past the cap anyway
            growth = math.inf
        bound = min(self.cap, self.base * growth)
        return rng.uniform(0.0, bound) if self.jitter else bound
