"""The clock seam: policies ask an injected clock for ``now`` instead of reading time.

Production code uses :data:`MONOTONIC`; tests pass :class:`microcall.testing.FakeClock`
and move time by hand, so no policy test ever sleeps.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything with a ``now()`` that returns monotonic seconds."""

    def now(self) -> float: ...


class MonotonicClock:
    """The process's monotonic clock (``time.monotonic``): immune to wall-clock jumps."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()


MONOTONIC: Clock = MonotonicClock()
