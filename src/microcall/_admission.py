"""Admission: the bound on what a client holds, with a queue whose waiters keep their deadlines.

Theory of operation. A client holds a call from the moment the call starts
running until it ends. ``slots`` calls may be in flight at once (the
connection pool's size: beyond it a call would only wait for a connection);
the next ``limit - slots`` wait here, first come first served; one more is
refused at once with ClientOverloaded. Without the bound, a client offered
more than it can issue piles calls up in its event loop until the loop
itself lags by seconds and every deadline is missed by as much.

Waiting here rather than in the pool has two points: a waiter gives up at
its own deadline with DeadlineExceeded (it was never sent), and a call that
waited starts its attempt with what is left, so the remaining time written
downstream is the time after queueing.

Cost on the common path, a free slot: the caller compares and increments
``busy`` itself and calls :meth:`Admission.release` at the end (a decrement
when nobody waits). No lock (one event loop), no future, no timer. Only a
call that must wait makes a future and a timer. A slot that is freed while
calls wait passes straight to the oldest waiter still waiting, so ``busy``
never dips and nobody can jump the queue.

States of a waiter: waiting -> granted (a slot was handed over) or expired
(its timer ran out) or cancelled (its caller gave up). ``queued`` counts
the waiting ones: a granted waiter leaves the count when the slot is handed
over, not when it next runs, so the call that ended and its caller's next
call (started in the same step) find the room it left. A waiter that leaves
stays in the deque as a done future until a release or the next waiter's
arrival drops it: removing it at once would cost a scan of the deque, exactly
when the client is busiest.
"""

from __future__ import annotations

import asyncio
from collections import deque

from microcall._request import Request
from microcall.errors import ClientOverloaded, DeadlineExceeded


class Admission:
    """How many calls a client holds, and the queue of those waiting for a slot.

    ``busy``: calls holding a slot. A caller takes a free slot itself::

        if admission.busy < admission.slots:
            admission.busy += 1
        else:
            await admission.wait(request, remaining)
        try: ...
        finally: admission.release()
    """

    __slots__ = ("_refusal", "_waiters", "busy", "limit", "queued", "slots")

    def __init__(self, *, limit: int, slots: int) -> None:
        self.limit = limit
        self.slots = min(slots, limit)
        self.busy = 0
        self.queued = 0  # waiters still waiting
        self._waiters: deque[asyncio.Future[bool]] = deque()
        # What every refusal says, written once: a refused call holds nothing,
        # and a client past its bound may refuse tens of thousands a second,
        # each on the CPU the calls it does send need.
        self._refusal = (
            f"client overloaded: it already holds max_calls ({self.limit}) calls, "
            f"{self.slots} in flight and the rest queued; not sent. Raise max_calls "
            "(a client option) if the service can take more, or send fewer calls"
        )

    @property
    def held(self) -> int:
        """Calls in flight plus calls queued."""
        return self.busy + self.queued

    async def wait(self, request: Request, timeout: float) -> None:
        """Wait for a slot, at most ``timeout`` seconds; on return the caller holds one.

        Raises ClientOverloaded at once when the queue is full, and
        DeadlineExceeded when ``timeout`` passes first.
        """
        if self.refuses():
            raise self.overloaded(request)
        waiters = self._waiters
        if len(waiters) > 2 * self.queued + 16:  # mostly waiters that left: drop them
            self._waiters = waiters = deque(waiter for waiter in waiters if not waiter.done())
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        waiters.append(waiter)
        self.queued += 1
        timer = loop.call_later(max(timeout, 0.0), _expire, waiter)
        granted = False
        try:
            granted = await waiter
        except asyncio.CancelledError:
            granted = waiter.done() and not waiter.cancelled() and waiter.result()
            if granted:
                self.release()  # handed a slot as its caller gave up: pass it on
            raise
        finally:
            timer.cancel()
            if not granted:  # a granted waiter left the count when release() handed it the slot
                self.queued -= 1
        if not granted:
            raise DeadlineExceeded(
                f"deadline exceeded after {timeout * 1000:.1f} ms queued for one of the "
                f"client's {self.slots} slots: the client holds more calls than it can "
                "send in time; not sent",
                request=request,
            )

    def refuses(self) -> bool:
        """No slot free and no place left in the queue: a call starting now is refused."""
        return self.busy >= self.slots and self.queued >= self.limit - self.slots

    def overloaded(self, request: Request) -> ClientOverloaded:
        return ClientOverloaded(self._refusal, request=request)

    def release(self) -> None:
        """End a call's hold on its slot: hand it to the oldest waiter, or free it."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                # It holds the slot from now on, not when it next runs: a call
                # starting before then must find the room it left in the queue.
                self.queued -= 1
                return
        self.busy -= 1


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
