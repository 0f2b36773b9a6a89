"""The background event loop behind Client and FuturesClient.

One daemon thread per client runs an event loop (uvloop where installed);
callers in any thread hand it coroutines and get ``concurrent.futures.Future``
objects back. No thread per request: hedging, cancellation and the pool work
exactly as in AsyncClient, and every thread shares one set of connections.

Each submission carries a copy of the caller's contextvars, so a deadline or
priority set in a WSGI worker thread (or an OpenTelemetry span) is what the
call sees inside the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import contextvars
import threading
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

try:  # pragma: no cover - depends on the platform
    import uvloop

    def _new_loop() -> asyncio.AbstractEventLoop:
        return uvloop.new_event_loop()

except ImportError:  # pragma: no cover
    _new_loop = asyncio.new_event_loop


class BackgroundLoop:
    """An event loop in a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def submit(self, coro: Coroutine[Any, Any, T]) -> cf.Future[T]:
        """Run ``coro`` on the loop, in a copy of the caller's context."""
        loop = self._loop or self._start()
        future: cf.Future[T] = cf.Future()
        future.add_done_callback(_notify_waiters_if_cancelled)
        loop.call_soon_threadsafe(_begin, loop, coro, future, context=contextvars.copy_context())
        return future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result in this thread."""
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): do not leave the call running
            raise

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = _new_loop()
                thread = threading.Thread(
                    target=_run_forever, args=(loop,), name=self._name, daemon=True
                )
                thread.start()
                self._thread = thread
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """Stop the loop and join its thread; safe to call twice."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("a client cannot be closed from inside its own event loop")
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def forget(self) -> None:
        """After fork, in the child: drop the parent's loop (its thread does not exist here)."""
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        # Let cancelled tasks run their cleanup (closing connections) before the loop closes.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())


def _begin(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], future: cf.Future[T]
) -> None:
    if future.cancelled():
        coro.close()
        return
    task = loop.create_task(coro)
    task.add_done_callback(partial(_settle, future))
    future.add_done_callback(partial(_propagate_cancel, loop, task))


def _settle(future: cf.Future[T], task: asyncio.Task[T]) -> None:
    if future.done():
        return
    try:
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())
    except cf.InvalidStateError:  # the caller cancelled it at the same instant
        pass


def _propagate_cancel(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], future: cf.Future[Any]
) -> None:
    if future.cancelled() and not task.done():
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(task.cancel)


def _notify_waiters_if_cancelled(future: cf.Future[Any]) -> None:
    # A cancelled Future only wakes ``wait()`` / ``as_completed()`` once
    # set_running_or_notify_cancel() is called; an executor does it when it
    # dequeues the item, here it is done the moment the cancel happens.
    if future.cancelled():
        future.set_running_or_notify_cancel()
