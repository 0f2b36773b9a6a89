"""Streaming calls on an AsyncChannel: one attempt with the deadline, metadata, breaker and observers.

A stream is never retried or hedged: the messages it has delivered cannot be
taken back, and a request stream read from the caller's iterator cannot be
replayed. What a stream does get is described in :mod:`._stream_attempt`;
errors are microcall's, as for unary calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import grpc
import grpc.aio

from microcall.grpc._core import ChannelCore
from microcall.grpc._errors import code_of, details_of
from microcall.grpc._observe import RpcAttempt, RpcMethod
from microcall.grpc._stream_attempt import StreamAttempt
from microcall.priority import Priority


class StreamingCallable:
    """A streaming method of an :class:`~microcall.grpc.AsyncChannel` (what the stub holds).

    Besides grpc's arguments, a call takes ``priority=`` for itself alone.
    """

    __slots__ = ("_callables", "_core", "method")

    def __init__(
        self, core: ChannelCore[grpc.aio.Channel], method: RpcMethod, callables: list[Any]
    ) -> None:
        self._core = core
        self.method = method
        self._callables = callables

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
    ) -> AsyncStreamCall:
        """The call; a request stream is ``request`` or, as grpc names it, ``request_iterator``."""
        if request_iterator is not None:
            request = request_iterator
        attempt = StreamAttempt(self._core, self.method)
        opened = attempt.open(timeout, metadata, priority)
        if opened is None:
            return AsyncStreamCall(attempt, None)
        slot, remaining, pairs = opened
        call = self._callables[slot](
            request,
            timeout=remaining,
            metadata=pairs,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )
        return AsyncStreamCall(attempt, call)


class AsyncStreamCall(
    grpc.aio.UnaryStreamCall[Any, Any],
    grpc.aio.StreamUnaryCall[Any, Any],
    grpc.aio.StreamStreamCall[Any, Any],
):
    """A streaming call: iterate it (or ``read()``) for responses, ``write()`` requests,
    or await it for the one response of a client-streaming call."""

    def __init__(self, attempt: StreamAttempt, call: Any) -> None:
        self._attempt = attempt
        self._call = call
        self._loop = asyncio.get_running_loop() if call is not None else None

    def __del__(self) -> None:
        # Left before its end (a `break` out of `async for`, a call dropped):
        # grpc cancels the RPC as it collects its own call; the end is
        # reported here, on the loop the stream ran on, so the target's count
        # of calls outstanding, its observers' call and span all end.
        loop = self._loop
        if loop is not None and not self._attempt.reported:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(_left, self._call, self._attempt)

    @property
    def attempts(self) -> tuple[RpcAttempt, ...]:
        """The one attempt, once the stream has ended."""
        return self._attempt.attempts

    # ------------------------------------------------------------ reading and writing

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            message = await self.read()
            if message is grpc.aio.EOF:
                return
            yield message

    async def read(self) -> Any:
        call = self._live()
        try:
            message = await call.read()
        except grpc.aio.AioRpcError as error:
            raise self._failed(error) from error
        except BaseException as error:
            self._attempt.abandoned(error)
            raise
        if message is grpc.aio.EOF:
            self._attempt.ended(None)
        return message

    async def write(self, request: Any) -> None:
        call = self._live()
        try:
            await call.write(request)
        except grpc.aio.AioRpcError as error:
            raise self._failed(error) from error

    async def done_writing(self) -> None:
        call = self._live()
        try:
            await call.done_writing()
        except grpc.aio.AioRpcError as error:
            raise self._failed(error) from error

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response().__await__()

    async def _response(self) -> Any:
        call = self._live()
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            raise self._failed(error) from error
        except BaseException as error:
            self._attempt.abandoned(error)
            raise
        self._attempt.ended(response)
        return response

    def _live(self) -> Any:
        if self._call is None:
            assert self._attempt.refusal is not None
            raise self._attempt.refusal
        return self._call

    def _failed(self, error: grpc.aio.AioRpcError) -> BaseException:
        return self._attempt.failed(
            error.code(), error.details() or "", tuple(error.trailing_metadata() or ())
        )

    # ------------------------------------------------------------ grpc.aio.Call

    def cancelled(self) -> bool:
        return self._call is not None and bool(self._call.cancelled())

    def done(self) -> bool:
        return self._call is None or bool(self._call.done())

    def time_remaining(self) -> float | None:
        return None if self._call is None else self._call.time_remaining()

    def cancel(self) -> bool:
        if self._call is None:
            return False
        cancelled = bool(self._call.cancel())
        if cancelled:
            self._attempt.abandoned()
        return cancelled

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._call is None:
            callback(self)
        else:
            self._call.add_done_callback(lambda _: callback(self))

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self._call is None:
            return grpc.aio.Metadata()
        return await self._call.initial_metadata()  # type: ignore[no-any-return]

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        if self._call is None:
            return grpc.aio.Metadata()
        return await self._call.trailing_metadata()  # type: ignore[no-any-return]

    async def code(self) -> grpc.StatusCode:
        if self._call is None:
            return code_of(self._attempt.refusal)
        return await self._call.code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        if self._call is None:
            return details_of(self._attempt.refusal)
        return await self._call.details()  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        if self._call is not None:
            await self._call.wait_for_connection()


def _left(call: Any, attempt: StreamAttempt) -> None:
    """A stream its caller left before its end: the server is told to stop, the call ends cancelled."""
    call.cancel()
    attempt.abandoned()
