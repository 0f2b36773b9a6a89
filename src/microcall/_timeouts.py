"""Coalesced timeouts: one event-loop timer per tick, shared by every attempt due in it.

Almost every attempt's timeout is never reached: the answer comes first. A
timer per attempt (what ``asyncio.timeout`` and aiohttp's ``ClientTimeout``
arm) costs a timer handle, a push onto the loop's heap and a cancellation, all
for nothing; at thousands of calls a second that is a tenth of a call's CPU.

Here the time is cut into ticks. A timeout joins the set of those that fall
due in the same tick, its expiry rounded *up* to the tick's end, so it never
fires early and fires at most one tick late (plus however late the loop runs). A tick has one loop timer,
armed by its first member; leaving is removing from a set, and a tick whose
members have all left fires for nothing (cheaper than cancelling its timer
and arming another for the next member). When a tick's timer fires, the tasks
of the members still there are cancelled, and each guard turns its own
cancellation into ``TimeoutError``, as ``asyncio.timeout`` does: a
cancellation that came from elsewhere passes through untouched.

"Early" and "late" are measured on ``time.monotonic()``, the clock callers
read, not on ``loop.time()``: uvloop's loop clock is cached once per loop
iteration at millisecond resolution, so it runs up to a millisecond or more
behind, and a tick reckoned from it (or a libuv timer rounded to the
millisecond) fired before its members' expiry for about 5% of guards. So
ticks are placed on the monotonic clock, and a tick timer that fires before
its tick has ended on that clock is armed again for the rest.

This is the hashed timer wheel of Netty and Finagle, with a dict for the
wheel. The tick grows with the timeout (a thousandth of it, at least
``MIN_TICK``): a 50 ms attempt is cut within a millisecond of its deadline, a
10 s one within about 10 ms, and a steady stream of long calls shares few
timers.
"""

from __future__ import annotations

import asyncio
import math
import time
from types import TracebackType

from microcall._tasks import task_on

MIN_TICK = 0.001
# How finely a timeout is cut, as a share of its length.
PRECISION = 1 / 1024
LONG = MIN_TICK / PRECISION  # from here on, ticks grow with the timeout

_monotonic = time.monotonic


class Timeouts:
    """The timers of one event loop; ``guard(seconds)`` bounds the current task."""

    __slots__ = ("_due", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # tick key -> the guards due in it; the tick's loop timer was armed with it
        self._due: dict[tuple[float, int], set[Guard]] = {}

    def guard(self, seconds: float) -> Guard:
        """A context manager that raises TimeoutError if its block runs past ``seconds``."""
        task = task_on(self._loop)
        if task is None:
            raise RuntimeError("a timeout guards a task; none is running")
        return Guard(self, task, seconds)

    def _fire(self, key: tuple[float, int]) -> None:
        early = key[1] * key[0] - _monotonic()
        if early > 0.0:  # the loop's clock ran behind the monotonic one: not due yet
            self._loop.call_later(early, self._fire, key)
            return
        for guard in self._due.pop(key):
            guard.fired = True
            guard.task.cancel()

    def __len__(self) -> int:
        """Guards waiting, for tests and diagnostics."""
        return sum(len(members) for members in self._due.values())


class Guard:
    """One task's timeout; enter it around the work it bounds."""

    __slots__ = ("_cancelling", "_key", "_seconds", "_timeouts", "fired", "task")

    def __init__(self, timeouts: Timeouts, task: asyncio.Task[object], seconds: float) -> None:
        self._timeouts = timeouts
        self.task = task
        self._seconds = seconds
        self._key: tuple[float, int] | None = None
        self._cancelling = 0
        self.fired = False

    def __enter__(self) -> Guard:
        seconds = self._seconds
        self._cancelling = self.task.cancelling()
        if seconds <= 0:
            self.fired = True
            self.task.cancel()
            return self
        # Join the tick this timeout falls due in (written out here, not in a
        # method of Timeouts: this runs on every attempt). Long timeouts: the
        # power of two just under PRECISION of the timeout.
        tick = MIN_TICK if seconds < LONG else 2.0 ** (math.frexp(seconds * PRECISION)[1] - 1)
        key = self._key = (tick, math.ceil((_monotonic() + seconds) / tick))
        timeouts = self._timeouts
        members = timeouts._due.get(key)
        if members is None:
            members = timeouts._due[key] = set()
            # On the loop's own clock, which never runs ahead of monotonic:
            # a timer placed there rarely fires early, and _fire checks anyway.
            timeouts._loop.call_at(key[1] * tick, timeouts._fire, key)
        members.add(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        key = self._key
        if key is not None:
            members = self._timeouts._due.get(key)
            if members is not None:  # else the tick has fired already
                members.discard(self)
        # Withdraw the cancellation this guard asked for; only when no other
        # is pending (the caller's own, say) does it become a timeout.
        if (
            self.fired
            and self.task.uncancel() <= self._cancelling
            and kind is asyncio.CancelledError
        ):
            raise TimeoutError from error
