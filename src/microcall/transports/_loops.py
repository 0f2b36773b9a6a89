"""What a transport does when its client is used from a new event loop.

A pooled HTTP client (an aiohttp session, an httpx client) and the attempt
timers belong to the event loop they were made in. A microcall client made
once and used from two ``asyncio.run`` calls, or from pytest-asyncio's loop
per test, meets a new loop after the first has ended: the transport then
opens a new pool on the new loop. The old one must not be left to the
garbage collector (it would warn about an unclosed session and unclosed
transports), so each pool is opened with a guard, an async generator started
on its loop: asyncio closes a loop's unfinished async generators when the
loop shuts down (``asyncio.run`` and pytest-asyncio call
``loop.shutdown_asyncgens()``), and the guard's ``finally`` closes the pool
then, on its own loop. ``aclose()`` closes the guard, and so the pool.

Two loops using one client *at the same time* (threads, each with its own
loop) cannot share a pool: that is refused with a ``UsageError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from microcall.errors import UsageError


def refuse_if_running(loop: asyncio.AbstractEventLoop | None) -> None:
    """Refuse a new loop while the pool's own loop (``loop``) still runs elsewhere."""
    if loop is not None and loop.is_running() and not loop.is_closed():
        raise UsageError(
            "this client's connection pool belongs to an event loop that is still running "
            "in another thread; a client (and its transport) serves one running loop at a "
            "time: make one client per loop (per thread), or use microcall.Client, whose "
            "calls run on a loop of its own from any thread"
        )


async def closing_at_loop_end(close: Callable[[], Awaitable[object]]) -> AsyncGenerator[None, None]:
    """A guard that calls ``close`` when the loop shuts down its async generators, or on aclose()."""
    try:
        yield
    finally:
        await close()


async def start_guard(close: Callable[[], Awaitable[object]]) -> AsyncGenerator[None, None]:
    """Start a guard on the running loop (its first step registers it with the loop)."""
    guard = closing_at_loop_end(close)
    await guard.asend(None)
    return guard


async def stop_guard(
    guard: AsyncGenerator[None, None] | None, loop: asyncio.AbstractEventLoop | None
) -> None:
    """Close ``guard`` (and its pool) now, if its loop is the running one.

    A guard of a loop that has ended already ran (the loop closed its async
    generators); one of a loop that never shut them down is left to it.
    """
    if guard is None or loop is not asyncio.get_running_loop():
        return
    await guard.aclose()
