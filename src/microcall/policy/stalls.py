"""Client stalls: time the client could not run, kept out of what the balancer learns.

Theory of operation. The balancer reads each attempt's latency as the
replica's. But when the client itself stops (a long garbage collection, a
handler holding the event loop, a container throttled by its CPU quota), the
answers wait unread, and every attempt in flight reads the stall as latency.
Peak-EWMA takes a peak at once and forgets it over tens of seconds, so after
one stall the replicas that were busy look slow, and an idle one, perhaps the
truly slow one, looks best until they are forgiven.

So the client watches its own event loop while attempts are in flight: a
timer due every ``interval`` notes how late it ran (``ran``). Lateness beyond
``threshold`` is a stall, kept as the span from when the timer was armed
(the loop was surely running then) to when it ran. The stall may have
begun anywhere in the first ``interval`` of that span, so the span errs
long, on purpose: a sample left a little too high is a peak the balancer
takes at once, while one a little too low only nudges its average. An
attempt's latency for the balancer is its measured latency less the stall
time inside it (``within``), and never below zero. The caller, the metrics
and the breakers see the latency as it was; only the balancer's estimate
is spared.

The spans are kept newest last, at most ``keep`` of them: an attempt older
than that many stalls is corrected for the newest ones only.
"""

from __future__ import annotations

import math
from collections import deque

# The loop watch's timer period, and the lateness that counts as a stall:
# above the jitter of a busy event loop's timers, below any stall that would
# mislead the balancer for long.
DEFAULT_INTERVAL = 0.01
DEFAULT_THRESHOLD = 0.02
DEFAULT_KEEP = 32


class Stalls:
    """Recent spans the client's loop could not run; how much of an attempt they cover."""

    __slots__ = ("_spans", "last_end", "threshold")

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, keep: int = DEFAULT_KEEP) -> None:
        self.threshold = threshold
        self._spans: deque[tuple[float, float]] = deque(maxlen=keep)
        self.last_end = -math.inf
        """When the newest stall ended (-inf: none yet)."""

    def ran(self, armed: float, due: float, now: float) -> None:
        """A timer armed at ``armed`` for ``due`` ran at ``now``: late by over ``threshold``, a stall."""
        if now - due > self.threshold:
            self._spans.append((armed, now))
            self.last_end = now

    def within(self, start: float, end: float) -> float:
        """Seconds of stall between ``start`` and ``end``."""
        if start >= self.last_end:  # the common case: no stall since the attempt began
            return 0.0
        total = 0.0
        for began, ended in reversed(self._spans):
            if ended <= start:
                break  # older spans end earlier still
            total += max(0.0, min(ended, end) - max(began, start))
        return total
