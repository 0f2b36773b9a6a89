"""A sync iterator read on a thread of its own, a bounded way ahead of the loop that sends it.

Why a thread: a generator given as a body is the caller's code, and may
block (it reads a file, a database cursor, a queue); run on the event loop
it would stall every other call there. Why not one executor hop per item:
generators often yield small pieces (a CSV row, a log line), and a hop costs
~60 µs (measured on the 2-core CI machine), so a million rows would take a
minute. Here the thread pulls items as fast as the iterator gives them into
a buffer of at most ``AHEAD`` bytes, and each read on the loop takes
whatever has gathered, up to ``chunk`` bytes, in one piece: small items
cost a ``next()`` each, and the loop wakes once per batch.

The thread ends with the iterator, when it raises, or when the sender is
done with it (``close()``, when an attempt ends mid-way; or the reader
dropped): the shared state is told to stop and the thread leaves after the
``next()`` it is in. The thread holds only that state, never the reader.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator

# How far ahead of the sender the thread may read: a few chunks, so the
# socket never waits on the generator while memory stays flat.
AHEAD = 256 * 1024

_BYTES = (bytes, bytearray, memoryview)


class _State:
    """What the thread and the reader share (under ``lock``)."""

    __slots__ = ("buffered", "done", "error", "items", "lock", "loop", "stopped", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lock = threading.Condition()
        self.items: deque[object] = deque()
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.stopped = False
        self.loop = loop
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Wake the reader if it waits (called with the lock held, from the thread)."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            try:
                self.loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                self.stopped = True


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _pull(iterator: Iterator[object], state: _State) -> None:
    lock = state.lock
    try:
        for item in iterator:
            size = len(item) if isinstance(item, _BYTES) else 0
            with lock:
                while state.buffered >= AHEAD and not state.stopped:
                    lock.wait()
                if state.stopped:
                    return
                state.items.append(item)
                state.buffered += size
                state.wake()
    except BaseException as error:  # the caller's generator raised: the sender reports it
        with lock:
            state.error = error
            state.wake()
    else:
        with lock:
            state.done = True
            state.wake()


class Pump:
    """Reads ``iterator`` on a thread; ``await read()`` gives up to ``chunk`` bytes, None at the end."""

    __slots__ = ("_chunk", "_iterator", "_state")

    def __init__(self, iterator: Iterator[object], chunk: int) -> None:
        self._iterator = iterator
        self._chunk = chunk
        self._state: _State | None = None

    async def read(self) -> object:
        state = self._state
        if state is None:
            state = self._state = _State(asyncio.get_running_loop())
            threading.Thread(
                target=_pull, args=(self._iterator, state), name="microcall-body", daemon=True
            ).start()
        while True:
            with state.lock:
                if state.items:
                    return self._take(state)
                if state.error is not None:
                    raise state.error
                if state.done:
                    return None
                waiter = state.waiter = state.loop.create_future()
            await waiter

    def _take(self, state: _State) -> object:
        """What has gathered, joined up to the chunk size (with the lock held)."""
        items = state.items
        first = items.popleft()
        if not isinstance(first, _BYTES):
            state.lock.notify()
            return first  # not bytes: the sender names the mistake
        pieces = [first]
        size = len(first)
        while items and size < self._chunk and isinstance(items[0], _BYTES):
            piece = items.popleft()
            pieces.append(piece)  # type: ignore[arg-type]
            size += len(piece)  # type: ignore[arg-type]
        state.buffered -= size
        state.lock.notify()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        """Let the thread go (after the ``next()`` it is in): the sender is done with it."""
        state = self._state
        if state is not None and not state.done:
            with state.lock:
                state.stopped = True
                state.lock.notify()

    def __del__(self) -> None:
        # Dropped before the iterator ended, without a close(): let the thread go.
        self.close()
