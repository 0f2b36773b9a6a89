"""The keep-alive pool of the HTTP/1.1 transport: idle connections per origin, and the limits.

Theory of operation. An origin is a key (scheme, host, port, TLS server
name). Each has a stack of idle connections: the most recently used one is
taken first (it is the least likely to have been closed by the server), and
one idle longer than ``keepalive_expiry`` is closed instead of handed out.
The oldest idle connection of an origin is checked for expiry each time a
connection is put back, so idle connections do not outlive their expiry by
more than the gap between two calls, without a timer of their own.

``max_connections`` bounds the connections *in use* over every origin and
``max_connections_per_host`` those of one origin (idle ones are not
counted, as in aiohttp's connector). A request that finds no slot waits, in
order of arrival, for a connection to be released; a waiter that is
cancelled (its deadline, a losing hedge) leaves the queue.

A connection carrying a streamed body stays in use until the body is done
with it; ``streaming`` holds those, so that closing the pool closes them too
rather than leaving them to a caller who may never come back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from microcall._limits import Limits
from microcall.transports._h1_conn import H1Connection, Origin

Opener = Callable[[Origin], Awaitable[H1Connection]]


class Pool:
    """Idle connections per origin, and the slots of the connections in use."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self._limits = limits
        self._loop = loop
        self._idle: dict[Origin, list[H1Connection]] = {}
        self._in_use = 0
        self._in_use_by: dict[Origin, int] = {}
        self._waiters: deque[tuple[Origin, asyncio.Future[None]]] = deque()
        self._expiry = limits.keepalive_expiry
        self._closed = False
        self.streaming: set[H1Connection] = set()  # in use by a streamed body

    def take_idle(self, key: Origin) -> H1Connection | None:
        """An idle connection to ``key`` with its slot taken, if one is usable and a slot is free.

        The common case of ``acquire`` without a coroutine: most calls find
        one, and making and running a coroutine costs more than the rest.
        """
        idle = self._idle.get(key)
        if not idle or not self._has_slot(key):
            return None
        now = self._loop.time()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since <= self._expiry:
                self._take_slot(key)
                return conn
            conn.close()
        return None

    async def acquire(self, key: Origin, open_new: Opener, fresh: bool) -> H1Connection:
        """A connection to ``key``: an idle one, unless ``fresh`` or none is usable, else a new one.

        With ``fresh``, the origin's idle connections are closed: they are as
        old as the one that was just found dead.
        """
        if self._has_slot(key):
            self._take_slot(key)
        else:
            await self._wait_for_slot(key)  # the slot is taken for it when it is woken
        try:
            idle = self._idle.get(key)
            if idle:
                if fresh:
                    for conn in idle:
                        conn.close()
                    idle.clear()
                else:
                    now = self._loop.time()
                    while idle:
                        conn = idle.pop()
                        if conn.usable and now - conn.idle_since <= self._expiry:
                            return conn
                        conn.close()
            return await open_new(key)
        except BaseException:
            self._give_slot(key)
            raise

    def release(self, conn: H1Connection, reusable: bool) -> None:
        """Give ``conn``'s slot back; keep it for reuse if ``reusable`` and still open."""
        key = conn.key
        self._give_slot(key)
        if not (reusable and conn.usable) or self._closed:
            conn.close()
            return
        now = self._loop.time()
        conn.idle_since = now
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        elif idle and now - idle[0].idle_since > self._expiry:
            idle.pop(0).close()
        idle.append(conn)

    def close(self) -> None:
        """Close every idle connection; those in use are closed as they come back."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in self.streaming:
            conn.close()

    # the limits

    def _has_slot(self, key: Origin) -> bool:
        if self._waiters or self._in_use >= self._limits.max_connections:
            return False
        per_host = self._limits.max_connections_per_host
        return per_host is None or self._in_use_by.get(key, 0) < per_host

    def _take_slot(self, key: Origin) -> None:
        self._in_use += 1
        if self._limits.max_connections_per_host is not None:
            self._in_use_by[key] = self._in_use_by.get(key, 0) + 1

    def _give_slot(self, key: Origin) -> None:
        self._in_use -= 1
        if self._limits.max_connections_per_host is not None:
            left = self._in_use_by[key] - 1
            if left:
                self._in_use_by[key] = left
            else:
                del self._in_use_by[key]
        if self._waiters:
            self._wake_next()

    async def _wait_for_slot(self, key: Origin) -> None:
        waiter = self._loop.create_future()
        entry = (key, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif waiter.done() and not waiter.cancelled():
                self._give_slot(key)  # it was woken as it was cancelled: pass the turn on
            raise

    def _wake_next(self) -> None:
        """Wake the first waiter whose origin has a slot (the others keep their place)."""
        if self._in_use >= self._limits.max_connections:
            return
        per_host = self._limits.max_connections_per_host
        for entry in self._waiters:
            key, waiter = entry
            if waiter.done():  # cancelled: it takes itself out of the queue
                continue
            if per_host is None or self._in_use_by.get(key, 0) < per_host:
                self._waiters.remove(entry)
                self._take_slot(key)
                waiter.set_result(None)
                return
