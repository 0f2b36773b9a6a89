"""The calls a client has in flight, so that closing it stops them with ClientClosed.

Every call runs inside :meth:`CallsInFlight.guard`, which notes the task
running it. :meth:`CallsInFlight.stop` (from ``aclose()``) cancels each of
those tasks and waits until their calls have ended; ``guard`` turns the
cancellation it caused into ClientClosed, and takes the cancellation back
(``Task.uncancel()``) so the caller's task carries on unaffected, while a
cancellation that came from elsewhere at the same time still propagates.

Cost on the common path: one more coroutine frame, finding the task and
adding to and removing from a set, a few hundred nanoseconds in all (see
docs/clients.md for the measurement); a call over loopback takes tens of
microseconds. A call the engine would refuse at once (the client holds all
it may) is refused here, before any of that: a client past its bound
refuses tens of thousands of calls a second, each on the CPU the calls it
does send need, and finding the task alone asks the kernel for the
process id (asyncio's check that the loop belongs to this process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from microcall._closing import CLOSING, closed_in_flight
from microcall._engine import Engine
from microcall._request import Request
from microcall._response import Response
from microcall._tasks import task_on
from microcall.errors import CallError, ClientClosed
from microcall.policy.strategy import Strategy


class Send(Protocol):
    """How a call is sent: ``Engine.call``, or the client's own way round a cache."""

    def __call__(
        self, request: Request, *, expires_at: float, priority: str | None, strategy: Strategy
    ) -> Coroutine[Any, Any, Response]: ...


class CallsInFlight:
    """The tasks running a client's calls, and the stopping of them when it closes."""

    __slots__ = ("_closed", "_drained", "_stopped", "_tasks")

    def __init__(self) -> None:
        self._closed = False  # stop() was called: the client is closing
        self._tasks: set[asyncio.Task[Any] | None] = set()
        self._stopped: set[asyncio.Task[Any]] = set()
        # Resolved when the last stopped call has ended; None unless stopping.
        self._drained: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def was_stopped(self) -> bool:
        """Whether :meth:`stop` was called (the client closed): a stream's body is then cut by it."""
        return self._closed

    async def guard(
        self,
        send: Send,
        request: Request,
        expires_at: float,
        priority: str | None,
        strategy: Strategy,
        engine: Engine | None = None,
    ) -> Response:
        """Run ``send(request, ...)`` as a call in flight: a ``stop()`` meanwhile raises ClientClosed.

        The call's coroutine is made here, not by the caller: a guard
        cancelled before it ever ran then leaves no coroutine never awaited.
        ``engine``: given when ``send`` is that engine's ``call`` itself, with
        nothing in front of it that could answer without a slot (a cache, a
        hook), so that a call it would refuse is refused here.
        """
        if engine is not None:
            admission = engine.admission
            if admission.busy >= admission.slots and admission.refuses():
                raise engine.refusal(request)
        task = task_on(asyncio.get_running_loop())
        tasks = self._tasks
        tasks.add(task)
        try:
            return await send(request, expires_at=expires_at, priority=priority, strategy=strategy)
        except (asyncio.CancelledError, CallError) as error:
            closed = self._closed_error(task, error, request)
            if closed is None:
                raise
            raise closed from (error if isinstance(error, CallError) else None)
        finally:
            tasks.discard(task)
            if self._drained is not None:
                self._ended(task)

    def _closed_error(
        self, task: asyncio.Task[Any] | None, error: BaseException, request: Request
    ) -> ClientClosed | None:
        """What a call stopped by ``stop()`` raises; None when it was not, or not only, stopped."""
        if task is None or task not in self._stopped:
            return None
        self._stopped.discard(task)
        if task.uncancel() > 0 and isinstance(error, asyncio.CancelledError):
            return None  # cancelled by someone else as well: theirs wins
        return closed_in_flight(request, error.attempts if isinstance(error, CallError) else ())

    def _ended(self, task: asyncio.Task[Any] | None) -> None:
        if task in self._stopped:  # ended by itself before the cancellation reached it
            self._stopped.discard(task)
            assert task is not None
            task.uncancel()
        drained = self._drained
        if drained is not None and not self._stopped and not drained.done():
            drained.set_result(None)

    async def stop(self) -> None:
        """Cancel every call in flight and wait until each has ended (with ClientClosed)."""
        self._closed = True
        me = task_on(asyncio.get_running_loop())
        for task in self._tasks:
            if task is not None and task is not me and task not in self._stopped:
                self._stopped.add(task)
                task.cancel(CLOSING)  # observers hear ClientClosed (_closing)
        if not self._stopped:
            return
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)
