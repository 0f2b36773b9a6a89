"""The background event loop behind Client and FuturesClient.

One daemon thread per client runs an event loop (uvloop where installed, or
the plain asyncio loop: see :func:`chosen_loop`); callers in any thread hand
it coroutines and get ``concurrent.futures.Future`` objects back. No thread
per request: hedging, cancellation and the pool work exactly as in
AsyncClient, and every thread shares one set of connections.

Each submission carries a copy of the caller's contextvars, so a deadline or
priority set in a WSGI worker thread (or an OpenTelemetry span) is what the
call sees inside the loop. Submissions cross to the loop through an inbox
drained once per wake-up, and blocking callers wait on a plain lock: see
``_handoff`` for why.

The loop's thread closes the loop itself once it stops, so a loop can be shut
down without anyone waiting for it (:meth:`BackgroundLoop.close_soon`, which a
finalizer uses) as well as with a join (:meth:`BackgroundLoop.close`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Literal, TypeVar

from microcall.client._fork import abandon, note_uvloop_ran
from microcall.client._handoff import Inbox, Waiter
from microcall.errors import ClientClosed, ConfigurationError, UsageError

T = TypeVar("T")

LoopKind = Literal["uvloop", "asyncio"]

# The environment variable that picks the loop of Client and FuturesClient.
LOOP_ENV = "MICROCALL_LOOP"

try:  # pragma: no cover - depends on the platform
    import uvloop

    HAVE_UVLOOP = True
except ImportError:  # pragma: no cover
    HAVE_UVLOOP = False

# Threads of loops stopped without a join (a client dropped without close()):
# the exit handler joins them, so they finish closing their sockets first.
_winding_down: set[threading.Thread] = set()


def chosen_loop() -> LoopKind:
    """The loop a Client or FuturesClient made now runs on.

    ``MICROCALL_LOOP=asyncio`` picks the plain asyncio loop, ``uvloop`` insists
    on uvloop; unset or empty, uvloop where it is installed.
    """
    given = os.environ.get(LOOP_ENV, "").strip().lower()
    if given == "asyncio" or (not given and not HAVE_UVLOOP):
        return "asyncio"
    if given in ("", "uvloop"):
        if not HAVE_UVLOOP:
            raise ConfigurationError(f"{LOOP_ENV}=uvloop, but uvloop is not installed")
        return "uvloop"
    raise ConfigurationError(f"{LOOP_ENV} must be 'uvloop' or 'asyncio', got {given!r}")


def _new_loop(kind: LoopKind) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        note_uvloop_ran()
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class BackgroundLoop:
    """An event loop in a daemon thread, started on first use.

    ``owner`` names the front door in errors ("this Client is closed").
    """

    def __init__(self, owner: str, kind: LoopKind | None = None) -> None:
        self._owner = owner
        self.kind: LoopKind = kind or chosen_loop()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: Inbox | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # Set while closing: a call task cancelled now was stopped by the close.
        self._closing = False

    @property
    def started(self) -> bool:
        return self._loop is not None

    @property
    def closing(self) -> bool:
        """True once ``close()`` began: nothing more is run."""
        return self._closing

    def submit(self, coro: Coroutine[Any, Any, T]) -> cf.Future[T]:
        """Run ``coro`` on the loop, in a copy of the caller's context."""
        inbox = self._inbox or self._start(coro)
        future: _CallFuture[T] = _CallFuture()
        if not inbox.put(self._begin_future, coro, future):
            coro.close()  # closed by another thread since this call began
            raise self._closed_error()
        return future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result in this thread."""
        inbox = self._inbox or self._start(coro)
        waiter: Waiter[T] = Waiter()
        if not inbox.put(self._begin_waiter, coro, waiter):
            coro.close()
            raise self._closed_error()
        try:
            return waiter.wait()
        except BaseException:
            if not waiter.abandoned:  # the call's own error
                raise
            # Interrupted (Ctrl-C): do not leave the call running.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                inbox.loop.call_soon_threadsafe(_stop_waited_call, waiter)
            raise

    def _start(self, coro: Coroutine[Any, Any, Any]) -> Inbox:
        with self._lock:
            if self._closed:
                coro.close()
                raise self._closed_error()
            if self._inbox is None:
                loop = _new_loop(self.kind)
                inbox = Inbox(loop, self._never_started)
                thread = threading.Thread(
                    target=_run_forever,
                    args=(loop, inbox),
                    name=f"microcall-{self._owner}",
                    daemon=True,
                )
                thread.start()
                self._thread = thread
                self._loop = loop
                self._inbox = inbox
            return self._inbox

    def _never_started(self) -> ClientClosed:
        return ClientClosed(f"the {self._owner} was closed before the call started")

    def _begin_future(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], future: _CallFuture[T]
    ) -> None:
        if future.cancelled():
            coro.close()
            return
        task = loop.create_task(coro)
        future.task = task
        task.add_done_callback(partial(self._settle_future, future))
        if future.cancelled():  # cancelled just now, before cancel() could see the task
            task.cancel()

    def _begin_waiter(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], waiter: Waiter[T]
    ) -> None:
        if waiter.abandoned:
            coro.close()
            return
        task = loop.create_task(coro)
        waiter.task = task
        task.add_done_callback(partial(self._settle_waiter, waiter))

    def _settle_future(self, future: cf.Future[T], task: asyncio.Task[T]) -> None:
        if future.done():
            return
        try:
            if not task.cancelled():
                if (error := task.exception()) is not None:
                    future.set_exception(error)
                else:
                    future.set_result(task.result())
            elif self._closing:  # stopped by close(), not by its caller
                future.set_exception(self._closed_in_flight())
            else:
                future.cancel()
        except cf.InvalidStateError:  # the caller cancelled it at the same instant
            pass

    def _settle_waiter(self, waiter: Waiter[T], task: asyncio.Task[T]) -> None:
        if not task.cancelled():
            if (error := task.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(task.result())
        elif self._closing and not waiter.abandoned:
            waiter.set_exception(self._closed_in_flight())
        else:
            waiter.set_exception(cf.CancelledError())

    def _closed_in_flight(self) -> ClientClosed:
        return ClientClosed(f"the {self._owner} was closed while the call was in flight")

    def _closed_error(self) -> UsageError:
        return UsageError(f"this {self._owner} is closed")

    def refuse_own_thread(self) -> None:
        """Raise RuntimeError on the loop's own thread: closing joins it, which cannot be done there."""
        if self._thread is not None and self._thread is threading.current_thread():
            raise RuntimeError("a client cannot be closed from inside its own event loop")

    def close(self, last: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Run ``last()`` on the loop (if it ever started), stop it and join its thread.

        Safe to call twice. Calls that are still running when ``last`` ends
        are stopped, and their callers get ClientClosed.
        """
        with self._lock:
            self.refuse_own_thread()
            loop, thread = self._loop, self._thread
            self._loop = self._thread = self._inbox = None
            self._closed = True
        if loop is None or thread is None:
            return
        self._closing = True
        try:
            if last is not None:
                asyncio.run_coroutine_threadsafe(last(), loop).result()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def close_soon(self, last: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Run ``last()`` on the loop, then stop it, without waiting for either.

        For a finalizer: it may run in any thread, this loop's own included,
        or in the middle of another client's call, and must never block. It
        takes no lock for the same reason (the owner is gone: nothing else
        starts or closes this loop now). The thread closes the loop when it
        ends; until then it is in ``_winding_down`` for the exit handler.
        """
        loop, thread = self._loop, self._thread
        self._loop = self._thread = self._inbox = None
        self._closed = self._closing = True
        if loop is None or thread is None:
            return
        _winding_down.add(thread)
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(_last_then_stop, loop, last)

    def forget(self) -> None:
        """After fork, in the child: drop the parent's loop (its thread does not exist here).

        The parent's loop is abandoned, never closed: see ``_fork``.
        """
        if self._loop is not None:
            abandon(self._loop, self._thread)
        self._lock = threading.Lock()
        self._loop = None
        self._inbox = None
        self._thread = None


def join_winding_down(timeout: float) -> None:
    """Wait (up to ``timeout`` seconds each) for loops stopped without a join to finish."""
    for thread in list(_winding_down):
        thread.join(timeout)


def _run_forever(loop: asyncio.AbstractEventLoop, inbox: Inbox) -> None:
    asyncio.set_event_loop(loop)
    try:
        while True:
            try:
                loop.run_forever()
            except (KeyboardInterrupt, SystemExit):
                # Raised by a caller's own code in one of the loop's tasks (a
                # hook, a body's generator, sys.exit() in either): asyncio
                # re-raises them out of the loop, but the task holds it for
                # its caller already. Signals reach the main thread only, so
                # neither asks this thread to stop: the other calls go on.
                continue
            break
    finally:
        # Let cancelled tasks run their cleanup (closing connections) before
        # the loop closes; a call submitted while it stopped starts then, so
        # look again until none is left.
        while pending := asyncio.all_tasks(loop):
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        inbox.shut()  # before the loop closes: a submission then is refused, not lost
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        _winding_down.discard(threading.current_thread())


def _last_then_stop(
    loop: asyncio.AbstractEventLoop, last: Callable[[], Coroutine[Any, Any, Any]] | None
) -> None:
    if last is None:
        loop.stop()
        return
    loop.create_task(last()).add_done_callback(partial(_stop_after, loop))


def _stop_after(loop: asyncio.AbstractEventLoop, last: asyncio.Task[Any]) -> None:
    if not last.cancelled():
        last.exception()  # retrieved: a finalizer has nobody to tell, asyncio need not log it
    loop.stop()


def _stop_waited_call(waiter: Waiter[Any]) -> None:
    if waiter.task is not None:
        waiter.task.cancel()


class _CallFuture(cf.Future[T]):
    """The future of one submitted call: ``cancel()`` also stops the call on the loop."""

    task: asyncio.Task[T] | None = None  # set by the loop once the call starts

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        # A cancelled Future only wakes ``wait()`` / ``as_completed()`` once
        # set_running_or_notify_cancel() is called; an executor does it when it
        # dequeues the item, here it is done the moment the cancel happens.
        self.set_running_or_notify_cancel()
        if (task := self.task) is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                task.get_loop().call_soon_threadsafe(task.cancel)
        return True
