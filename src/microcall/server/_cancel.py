"""Cancelling an async handler when its request's deadline passes (opt-in).

The handler runs under ``asyncio.timeout``; the admission gets a
``reschedule`` hook so a route's ``@default_timeout``, applied once the
handler has started, moves the cancellation too, even from a worker thread
(FastAPI runs plain functions in a thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from functools import partial
from typing import TypeVar

from microcall.deadline import Deadline
from microcall.server._admission import Admission

T = TypeVar("T")


class DeadlineCancelled(Exception):
    """The handler was cancelled because its request's deadline passed."""


async def within_deadline(admission: Admission, work: Awaitable[T]) -> T:
    """Await ``work``; raise DeadlineCancelled if the deadline passes first."""
    loop = asyncio.get_running_loop()
    scope = asyncio.timeout(admission.deadline.remaining())
    try:
        async with scope:
            admission.reschedule = partial(_move, loop, scope)
            try:
                return await work
            finally:
                admission.reschedule = None
    except TimeoutError:
        if scope.expired():
            raise DeadlineCancelled from None
        raise  # the handler's own timeout, not ours


def _move(loop: asyncio.AbstractEventLoop, scope: asyncio.Timeout, deadline: Deadline) -> None:
    when = loop.time() + deadline.remaining()

    def apply() -> None:
        if not scope.expired():
            # Entered and not expired is the only state that accepts a new
            # time; a handler finishing in between leaves nothing to move.
            with contextlib.suppress(RuntimeError):
                scope.reschedule(when)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        apply()
    else:
        loop.call_soon_threadsafe(apply)
