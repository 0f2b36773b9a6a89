"""Streaming calls on a blocking Channel, and the future of a blocking call.

As with grpc.aio (:mod:`._aio_streams`), a stream is one attempt: deadline,
metadata, target and breaker from :mod:`._stream_attempt`, never retried or
hedged. A response stream is an iterator that is also the grpc Call; a
client-streaming call returns its response (``with_call`` and ``future``
work as in grpcio).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from microcall.errors import CallError
from microcall.grpc._core import ChannelCore, status_of
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
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        priority: Priority | str | None = None,
    ) -> Any:
        """A response iterator, or for a client stream the response itself."""
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
            assert attempt.refusal is not None
            raise attempt.refusal
        slot, remaining, pairs = opened
        call = self._callables[slot](
            request, remaining, pairs, credentials, wait_for_ready, compression
        )
        return BlockingStreamCall(attempt, call)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        priority: Priority | str | None = None,
    ) -> tuple[Any, grpc.Call]:
        """A client stream's response and its grpc call."""
        attempt = StreamAttempt(self._core, self.method)
        opened = attempt.open(timeout, metadata, priority)
        if opened is None:
            assert attempt.refusal is not None
            raise attempt.refusal
        slot, remaining, pairs = opened
        try:
            response, call = self._callables[slot].with_call(
                request, remaining, pairs, credentials, wait_for_ready, compression
            )
        except grpc.RpcError as error:
            raise _failed(attempt, error) from error
        except BaseException as error:
            attempt.abandoned(error)
            raise
        attempt.ended(response)
        return response, call

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        priority: Priority | str | None = None,
    ) -> CallFuture:
        """A client stream running in the background (deadline and priority fixed now)."""
        core = self._core
        if timeout is None:
            now = core.now()
            timeout = max(core.expires_at(None, now) - now, 0.0)
        submitted = self._executor().submit(
            self.with_call,
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            priority=core.priority(priority),
        )
        return CallFuture(submitted)


def _failed(attempt: StreamAttempt, error: grpc.RpcError) -> BaseException:
    return attempt.failed(*status_of(error))


class BlockingStreamCall(grpc.Call):
    """A response stream: iterate it; it is also the call (status, metadata, ``cancel()``)."""

    def __init__(self, attempt: StreamAttempt, call: Any) -> None:
        self._attempt = attempt
        self._call = call

    @property
    def attempts(self) -> tuple[RpcAttempt, ...]:
        """The one attempt, once the stream has ended."""
        return self._attempt.attempts

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
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

    def code(self) -> grpc.StatusCode:
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._call.details()  # type: ignore[no-any-return]

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return bool(self._call.add_callback(callback))

    def cancel(self) -> bool:
        cancelled = bool(self._call.cancel())
        if cancelled:
            self._attempt.abandoned()
        return cancelled

    def is_active(self) -> bool:
        return bool(self._call.is_active())

    def time_remaining(self) -> float:
        return self._call.time_remaining()  # type: ignore[no-any-return]


class CallFuture(_FutureBase[Any], grpc.Call):
    """A call running on a worker thread: grpc's Future of its response, and its Call once done.

    ``result()`` raises microcall's error for the call (a CallError), as the
    blocking call would.
    """

    def __init__(self, submitted: futures.Future[tuple[Any, Any]]) -> None:
        self._future = submitted

    def _call(self) -> Any:
        try:
            return self._future.result()[1]
        except CallError as error:
            return error.__cause__

    # ------------------------------------------------------------ grpc.Future

    def cancel(self) -> bool:
        return self._future.cancel()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def running(self) -> bool:
        return self._future.running()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout)[0]

    def exception(self, timeout: float | None = None) -> Exception | None:
        error = self._future.exception(timeout)
        return error if error is None or isinstance(error, Exception) else None

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        error = self._future.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[grpc.Future[Any]], None]) -> None:
        self._future.add_done_callback(lambda _: fn(self))

    # ------------------------------------------------------------ grpc.Call

    def code(self) -> grpc.StatusCode:
        call = self._call()
        return call.code() if isinstance(call, grpc.Call) else grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        call = self._call()
        return (call.details() or "") if isinstance(call, grpc.Call) else ""

    def initial_metadata(self) -> Any:
        call = self._call()
        return call.initial_metadata() if isinstance(call, grpc.Call) else ()

    def trailing_metadata(self) -> Any:
        call = self._call()
        return call.trailing_metadata() if isinstance(call, grpc.Call) else ()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._future.add_done_callback(lambda _: callback())
        return True

    def is_active(self) -> bool:
        return not self._future.done()

    def time_remaining(self) -> float:
        return 0.0 if self._future.done() else float("inf")
