"""A client's watch on its own event loop, so its stalls stay out of what the balancer learns.

The decisions are :class:`~microcall.policy.stalls.Stalls`' (what counts as
a stall, how much of an attempt it covers); this is the timer that feeds
them. While attempts are in flight, a timer is due every
``DEFAULT_INTERVAL``; how late it runs is how long the loop could not run.
When nothing is in flight the timer stops, so an idle client costs nothing,
and the next attempt starts it again.

Used by the HTTP clients' replica groups and by the targets of a gRPC
``AsyncChannel``: anything that balances attempts run on one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from microcall.policy.stalls import DEFAULT_INTERVAL, Stalls


class LoopWatch:
    """Stalls of the running event loop while ``busy()`` says attempts are in flight.

    Times are ``time.monotonic``'s, the clock the attempts are timed on: an
    owner whose calls read an injected clock (a test's) has no stalls to see
    and makes no watch.
    """

    __slots__ = ("_busy", "_loop", "_timer", "stalls")

    def __init__(self, busy: Callable[[], bool]) -> None:
        self._busy = busy
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stalls = Stalls()

    @property
    def watching(self) -> bool:
        """Whether the timer is armed (attempts were in flight when it last ran)."""
        return self._timer is not None

    def started(self, now: float) -> None:
        """An attempt was sent (on the loop): watch, unless already watching."""
        if self._timer is None:
            self._arm(now)
        elif self._loop is not asyncio.get_running_loop():
            # The client moved to a new loop (a second asyncio.run): the timer
            # armed on the old one will never run.
            self._timer.cancel()
            self._arm(now)

    def own_latency(self, latency: float, now: float) -> float:
        """An attempt's latency less the loop's stalls in it: the endpoint's share."""
        return max(latency - self.stalls.within(now - latency, now), 0.0)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, now: float) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._timer = loop.call_later(DEFAULT_INTERVAL, self._ran, now)

    def _ran(self, armed: float) -> None:
        now = time.monotonic()
        self.stalls.ran(armed, armed + DEFAULT_INTERVAL, now)
        if self._busy():
            self._arm(now)
        else:
            self._timer = None  # idle: the next attempt starts the watch again
