"""Streaming calls on a blocking Channel, and the future of a blocking call.

As with grpc.aio (:mod:`._aio_streams`), a stream is one attempt: deadline,
metadata, target and breaker from :mod:`._stream_attempt`, never retried or
hedged. A response stream is an iterator that is also the grpc Call; a
client-streaming call returns its response (``with_call`` and ``future``
work as in grpcio).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from microcall.errors import CallError
from microcall.grpc._core import ChannelCore, status_of
from microcall.grpc._errors import CANCELLED_DETAILS, code_of, details_of
from microcall.grpc._observe import RpcAttempt, RpcMethod
from microcall.grpc._stream_attempt import StreamAttempt
from microcall.priority import Priority

T = TypeVar("T")


if TYPE_CHECKING:
    _FutureBase = grpc.Future
else:  # grpcio's blocking classes are generic only in its typing stubs

    class _FutureBase(grpc.Future, Generic[T]):
        __slots__ = ()


class BlockingStreaming:
    """A streaming method of a :class:`~microcall.grpc.Channel` (what the stub holds)."""

    __slots__ = ("_callables", "_core", "_executor", "method")

    def __init__(
        self,
        core: ChannelCore[grpc.Channel],
        method: RpcMethod,
        callables: list[Any],
        executor: Callable[[], futures.ThreadPoolExecutor],
    ) -> None:
        self._core = core
        self.method = method
        self._callables = callables
        self._executor = executor

    def __call__(
        self,
        request: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        request_iterator: Any = None,
        priority: Priority | str | None = None,
    ) -> Any:
        """A response iterator, or for a client stream the response itself.

        A request stream is ``request`` or, as grpc names it, ``request_iterator``.
        """
        if request_iterator is not None:
            request = request_iterator
        if self.method.cardinality == "stream_unary":
            response, _ = self.with_call(
                request,
                timeout,
                metadata,
                credentials,
                wait_for_ready,
                compression,
                priority=priority,
            )
            return response
        attempt = StreamAttempt(self._core, self.method)
        opened = attempt.open(timeout, metadata, priority)
        if opened is None:
            # As grpc does, a stream refused before it is sent fails where it is read.
            return BlockingStreamCall(attempt, None)
        slot, remaining, pairs = opened
        call = self._callables[slot](
            request, remaining, pairs, credentials, wait_for_ready, compression
        )
        return BlockingStreamCall(attempt, call)

    def with_call(
        self,
        request: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        request_iterator: Any = None,
        priority: Priority | str | None = None,
    ) -> tuple[Any, grpc.Call]:
        """A client stream's response and its grpc call."""
        if request_iterator is not None:
            request = request_iterator
        return self._with_call(
            request, timeout, metadata, (credentials, wait_for_ready, compression), priority, None
        )

    def _with_call(
        self,
        request: Any,
        timeout: float | None,
        metadata: Any,
        extra: tuple[Any, Any, Any],
        priority: Priority | str | None,
        cancellation: Cancellation | None,
    ) -> tuple[Any, grpc.Call]:
        credentials, wait_for_ready, compression = extra
        attempt = StreamAttempt(self._core, self.method)
        opened = attempt.open(timeout, metadata, priority)
        if opened is None:
            assert attempt.refusal is not None
            raise attempt.refusal
        slot, remaining, pairs = opened
        callable_ = self._callables[slot]
        try:
            if cancellation is None:
                response, call = callable_.with_call(
                    request, remaining, pairs, credentials, wait_for_ready, compression
                )
            else:
                call = callable_.future(
                    request, remaining, pairs, credentials, wait_for_ready, compression
                )
                response = cancellation.result_of(call)
        except grpc.RpcError as error:
            raise _failed(attempt, error) from error
        except BaseException as error:
            attempt.abandoned(error)
            raise
        attempt.ended(response)
        return response, call

    def future(
        self,
        request: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        request_iterator: Any = None,
        priority: Priority | str | None = None,
    ) -> CallFuture:
        """A client stream running in the background (deadline and priority fixed now)."""
        if request_iterator is not None:
            request = request_iterator
        core = self._core
        core.check_open()  # before the executor, which refuses work once the channel closed
        # Fixed here, capped by the context's: the worker thread has no context.
        now = core.now()
        expires_at = core.expires_at(timeout, now)
        cancellation = Cancellation()
        submitted = self._executor().submit(
            self._with_call,
            request,
            max(expires_at - now, 0.0),
            metadata,
            (credentials, wait_for_ready, compression),
            core.priority(priority),
            cancellation,
        )
        return CallFuture(submitted, cancellation, expires_at, core.now)


def _failed(attempt: StreamAttempt, error: grpc.RpcError) -> BaseException:
    return attempt.failed(*status_of(error))


class BlockingStreamCall(_FutureBase[Any], grpc.Call):
    """A response stream: iterate it; it is also the call and its future, as grpcio's is.

    A stream refused before it was sent (deadline, breaker) raises the
    refusal from its first ``next()`` and reports it as its status.
    """

    def __init__(self, attempt: StreamAttempt, call: Any) -> None:
        self._attempt = attempt
        self._call = call

    def __del__(self) -> None:
        # Left before its end (a `break`, a stream dropped): the server is
        # told to stop at once, and the end is reported, so the target's
        # count of calls outstanding, its observers' call and span all end.
        # (grpc's own stream object is in a reference cycle: it would be
        # cancelled only when the collector gets to it.)
        call = self._call
        if call is not None and not self._attempt.reported:
            call.cancel()
            self._attempt.abandoned()

    @property
    def attempts(self) -> tuple[RpcAttempt, ...]:
        """The one attempt, once the stream has ended."""
        return self._attempt.attempts

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._call is None:
            assert self._attempt.refusal is not None
            raise self._attempt.refusal
        try:
            return next(self._call)
        except StopIteration:
            self._attempt.ended(None)
            raise
        except grpc.RpcError as error:
            raise _failed(self._attempt, error) from error
        except BaseException as error:
            self._attempt.abandoned(error)
            raise

    # ------------------------------------------------------------ grpc.Call

    def code(self) -> grpc.StatusCode:
        if self._call is None:
            return code_of(self._attempt.refusal)
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        if self._call is None:
            return details_of(self._attempt.refusal)
        return self._call.details()  # type: ignore[no-any-return]

    def initial_metadata(self) -> Any:
        return () if self._call is None else self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return () if self._call is None else self._call.trailing_metadata()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return self._call is not None and bool(self._call.add_callback(callback))

    def cancel(self) -> bool:
        if self._call is None:
            return False
        cancelled = bool(self._call.cancel())
        if cancelled:
            self._attempt.abandoned()
        return cancelled

    def is_active(self) -> bool:
        return self._call is not None and bool(self._call.is_active())

    def time_remaining(self) -> float:
        return 0.0 if self._call is None else self._call.time_remaining()

    # ------------------------------------------------------------ grpc.Future

    def cancelled(self) -> bool:
        return self._call is not None and bool(self._call.cancelled())

    def running(self) -> bool:
        return self._call is not None and bool(self._call.running())

    def done(self) -> bool:
        return self._call is None or bool(self._call.done())

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the stream's end; raise microcall's error if it failed."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> Exception | None:
        if self._call is None:
            return self._attempt.refusal  # type: ignore[return-value]
        error = self._call.exception(timeout)
        if isinstance(error, grpc.RpcError):
            return _failed(self._attempt, error)  # type: ignore[return-value]
        return error  # type: ignore[no-any-return]

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[grpc.Future[Any]], None]) -> None:
        if self._call is None:
            fn(self)
        else:
            self._call.add_done_callback(lambda _: fn(self))


class Cancellation:
    """How a :class:`CallFuture` stops the call its worker thread runs, at once.

    The worker sends each attempt with grpc's ``future()`` and registers it
    here; ``cancel()`` cancels them (grpc resets their streams) and wakes
    the worker wherever it waits, which then ends the call as cancelled.
    """

    __slots__ = ("_calls", "_lock", "_wakers", "cancelled")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Any] = []
        self._wakers: list[Callable[[], None]] = []
        self.cancelled = False

    def watch(self, call: Any) -> None:
        """Cancel ``call`` with the rest (at once if already cancelled)."""
        with self._lock:
            if not self.cancelled:
                self._calls.append(call)
                return
        call.cancel()

    def on_cancel(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if not self.cancelled:
                self._wakers.append(wake)
                return
        wake()

    def check(self) -> None:
        """Raise CancelledError if the call was cancelled."""
        if self.cancelled:
            raise futures.CancelledError(CANCELLED_DETAILS)

    def result_of(self, call: Any) -> Any:
        """The response of grpc's ``call`` (a future); CancelledError once cancelled."""
        self.watch(call)
        try:
            return call.result()
        except grpc.FutureCancelledError:
            raise futures.CancelledError(CANCELLED_DETAILS) from None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            calls, self._calls = self._calls, []
            wakers, self._wakers = self._wakers, []
        for call in calls:
            call.cancel()
        for wake in wakers:
            wake()


class CallFuture(_FutureBase[Any], grpc.Call):
    """A call running on a worker thread: grpc's Future of its response, and its Call once done.

    ``result()`` raises microcall's error for the call (a CallError, also a
    grpc.RpcError), as the blocking call would. ``cancel()`` stops the call
    also once it runs, as grpcio's does: it is then done, ``result()``
    raises ``grpc.FutureCancelledError`` and ``code()`` is CANCELLED.
    """

    def __init__(
        self,
        submitted: futures.Future[tuple[Any, Any]],
        cancellation: Cancellation,
        expires_at: float,
        clock: Callable[[], float],
    ) -> None:
        self._future = submitted
        self._cancellation = cancellation
        # The deadline fixed when the call was made, on the channel's clock.
        self._expires_at = expires_at
        self._clock = clock

    def _call(self) -> Any:
        try:
            return self._future.result()[1]
        except CallError as error:
            return error.__cause__

    # ------------------------------------------------------------ grpc.Future

    def cancel(self) -> bool:
        if self._future.cancel():
            return True
        cancellation = self._cancellation
        if cancellation is None or self._future.done():
            return False
        cancellation.cancel()
        return True

    def cancelled(self) -> bool:
        cancellation = self._cancellation
        return self._future.cancelled() or (cancellation is not None and cancellation.cancelled)

    def running(self) -> bool:
        return not self.cancelled() and self._future.running()

    def done(self) -> bool:
        return self.cancelled() or self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        if self.cancelled():
            raise grpc.FutureCancelledError
        return self._future.result(timeout)[0]

    def exception(self, timeout: float | None = None) -> Exception | None:
        if self.cancelled():
            raise grpc.FutureCancelledError
        error = self._future.exception(timeout)
        return error if error is None or isinstance(error, Exception) else None

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[grpc.Future[Any]], None]) -> None:
        self._future.add_done_callback(lambda _: fn(self))

    # ------------------------------------------------------------ grpc.Call

    def code(self) -> grpc.StatusCode:
        if self.cancelled():
            return grpc.StatusCode.CANCELLED
        call = self._call()
        if isinstance(call, grpc.Call):
            return call.code()
        return code_of(self._future.exception())

    def details(self) -> str:
        if self.cancelled():
            return CANCELLED_DETAILS
        call = self._call()
        if isinstance(call, grpc.Call):
            return call.details() or ""
        details = getattr(self._future.exception(), "details", None)
        return str(details() or "") if callable(details) else ""

    def initial_metadata(self) -> Any:
        if self.cancelled():
            return ()
        call = self._call()
        return call.initial_metadata() if isinstance(call, grpc.Call) else ()

    def trailing_metadata(self) -> Any:
        if self.cancelled():
            return ()
        call = self._call()
        return call.trailing_metadata() if isinstance(call, grpc.Call) else ()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._future.add_done_callback(lambda _: callback())
        return True

    def is_active(self) -> bool:
        return not self.done()

    def time_remaining(self) -> float:
        return 0.0 if self.done() else max(self._expires_at - self._clock(), 0.0)
