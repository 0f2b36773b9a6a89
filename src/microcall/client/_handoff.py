"""How calls cross from the callers' threads to a background loop, and answers cross back.

Measured on a blocking call over a MockTransport (docs/clients.md has the
figures), the engine's own work is a small part of a call made from another
thread: the rest is waking the loop's thread and waking the caller again.
Two things keep that toll down:

* :class:`Inbox`: submitted calls wait in a deque the loop drains; only the
  submission that finds the loop not yet asked to drain writes its wake-up
  (``call_soon_threadsafe``). A burst of 64 FuturesClient calls costs one
  wake-up of the loop, not 64.
* :class:`Waiter`: a blocking caller waits in ``os.read`` on a pipe of its
  thread's, which the loop writes one byte to, instead of on a
  ``concurrent.futures.Future``'s condition variable: both sides then drop
  the GIL before blocking or waking the other, and a call costs two context
  switches instead of six.

An inbox is shut when its loop ends: whatever is still in it is settled with
ClientClosed, and a submission arriving after that is refused, so no caller
waits for a loop that is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import contextvars
import os
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# What the loop does with a submission once drained: start ``coro`` on the
# loop and tie its outcome to ``holder`` (a cf.Future or a Waiter).
Begin = Callable[[asyncio.AbstractEventLoop, Coroutine[Any, Any, Any], Any], None]


class _ReplyPipe:
    """A pipe one thread waits on for its calls' answers, reused call after call.

    Waiting in ``os.read`` (and the loop's ``os.write``) lets each side give up
    the GIL before it blocks or wakes the other: a call then costs two
    context switches. A lock or condition variable costs six (each side wakes
    while the other still holds the GIL, and is switched out again).
    """

    __slots__ = ("pid", "read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.pid = os.getpid()

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        # Closed only once nothing holds it (the loop drops it with the call's
        # Waiter), so the loop never writes to a descriptor number reused since.
        # (``os.close`` bound early: this may run as the interpreter tears down.)
        for fd in (self.read_fd, self.write_fd):
            try:  # noqa: SIM105 - no contextlib: it may be torn down already
                _close(fd)
            except OSError:
                pass


_threads = threading.local()


def _reply_pipe() -> _ReplyPipe:
    pipe: _ReplyPipe | None = getattr(_threads, "pipe", None)
    # A forked child shares its parent's pipe: it must never read the parent's answers.
    if pipe is None or pipe.pid != os.getpid():
        pipe = _threads.pipe = _ReplyPipe()
    return pipe


class Waiter(Generic[T]):
    """The answer to one blocking call: the loop sets it once, the caller waits on its thread's pipe."""

    __slots__ = ("_error", "_pipe", "_result", "abandoned", "task")

    def __init__(self) -> None:
        self._pipe = _reply_pipe()
        self._result: T | None = None
        self._error: BaseException | None = None
        # Set by the caller it interrupted (Ctrl-C): the call is not to start, or to stop.
        self.abandoned = False
        self.task: asyncio.Task[T] | None = None

    def set_result(self, value: T) -> None:
        self._result = value
        self._wake()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # an abandoned pipe may be closed; nobody waits
            os.write(self._pipe.write_fd, b"\0")

    def wait(self) -> T:
        """Block until the loop answers; return the result or raise the error."""
        try:
            os.read(self._pipe.read_fd, 1)
        except BaseException:
            # Interrupted: the answer may still be written later, so this
            # thread's next call must not read it; it gets a pipe of its own.
            self.abandoned = True
            if getattr(_threads, "pipe", None) is self._pipe:
                del _threads.pipe
            raise
        error, self._error = self._error, None  # no cycle through the traceback
        if error is not None:
            raise error
        return self._result  # type: ignore[return-value]


class Inbox:
    """Calls submitted to one loop from any thread, started by the loop in order, in batches."""

    __slots__ = ("_asked", "_items", "_refusal", "_shut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, refusal: Callable[[], BaseException]):
        self.loop = loop
        self._items: deque[tuple[contextvars.Context, Begin, Coroutine[Any, Any, Any], Any]]
        self._items = deque()
        # True from the moment one submitter asks the loop to drain until the
        # drain begins: the submitters in between need not ask again.
        self._asked = False
        self._shut = False
        self._refusal = refusal  # the error for calls the loop never started

    def put(self, begin: Begin, coro: Coroutine[Any, Any, Any], holder: Any) -> bool:
        """Queue a call (in a copy of the caller's context); False if the loop is gone.

        ``begin(loop, coro, holder)`` runs on the loop, in that context.
        """
        item = (contextvars.copy_context(), begin, coro, holder)
        self._items.append(item)
        # Appended first, checked second (and the loop's thread sets ``_shut``
        # before its last drain): either that drain sees the item or this sees
        # ``_shut``; when both happen, ``remove`` decides who settles it.
        if self._shut:
            try:
                self._items.remove(item)
            except ValueError:  # the last drain took it, and settled it
                return True
            return False
        if not self._asked:
            self._asked = True
            with contextlib.suppress(RuntimeError):  # closed: then it is shut, see above
                self.loop.call_soon_threadsafe(self._drain)
        return True

    def _drain(self) -> None:
        # Cleared before popping: a submission appended after the last pop
        # sees it cleared and asks again (at worst for an empty drain).
        self._asked = False
        items = self._items
        while items:
            context, begin, coro, holder = items.popleft()
            try:
                context.run(begin, self.loop, coro, holder)
            except BaseException:
                if items and not self._asked:
                    self._asked = True
                    self.loop.call_soon(self._drain)
                raise

    def shut(self) -> None:
        """On the loop's thread, as it ends: refuse what was never started, and all that follows."""
        self._shut = True
        while self._items:
            try:
                _context, _begin, coro, holder = self._items.popleft()
            except IndexError:  # a submitter removed its own item meanwhile
                break
            coro.close()
            refuse(holder, self._refusal())


def refuse(holder: Any, error: BaseException) -> None:
    """Settle a call that will never run with ``error`` (unless its caller cancelled it)."""
    if isinstance(holder, cf.Future):
        with contextlib.suppress(cf.InvalidStateError):
            if not holder.done():
                holder.set_exception(error)
    else:
        holder.set_exception(error)
