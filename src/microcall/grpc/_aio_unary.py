"""Unary-unary calls on an AsyncChannel: the multi-callable a stub holds and the call it returns.

A call with one attempt on one target without a breaker or observers takes
a straight path: one grpc call, no task, no plan, the common case that must
cost next to nothing over grpc itself. Any other call runs the call driver
(:mod:`microcall._driver`, the same as HTTP's, adapted to gRPC by
:mod:`microcall.grpc._unary`) with one asyncio task per attempt; losers are
cancelled as soon as the call is decided.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import replace
from functools import partial
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from microcall._attempt import AttemptKind
from microcall._wire import PRIORITY_METADATA
from microcall.errors import CallError
from microcall.grpc._core import (
    CLOSED_DETAILS,
    ChannelCore,
    MetadataPairs,
    status_error,
    wire_timeout,
)
from microcall.grpc._errors import CANCELLED_DETAILS, code_of, details_of
from microcall.grpc._observe import RpcAttempt, RpcMethod, RpcWatch
from microcall.grpc._unary import Answered, Failed, Outcome, Start, UnaryCall
from microcall.policy.strategy import Finish, SingleAttempt, Strategy
from microcall.priority import Priority

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_NEW, _RUNNING, _DONE = 0, 1, 2


class _CallArgs:
    """What one stub call was given."""

    __slots__ = (
        "compression",
        "credentials",
        "idempotent",
        "metadata",
        "priority",
        "strategy",
        "timeout",
        "wait_for_ready",
    )

    def __init__(
        self,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
        priority: Priority | str | None,
        strategy: Strategy | None,
        idempotent: bool | None,
    ) -> None:
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression
        self.priority = priority
        self.strategy = strategy
        self.idempotent = idempotent


# What a call given nothing but its request has: the common case, shared.
_BARE = _CallArgs(None, None, None, None, None, None, None, None)

# The metadata of such a call, one object per priority: grpc.aio converts a
# tuple into its Metadata on every call (about 4 µs), an instance it takes
# as is. Shared only with channels microcall made itself, whose calls no
# client interceptor could add to it.
_OWN_METADATA: dict[str | None, grpc.aio.Metadata] = {
    level.value: grpc.aio.Metadata((PRIORITY_METADATA, level.value)) for level in Priority
}
_OWN_METADATA[None] = grpc.aio.Metadata()


class UnaryUnary(grpc.aio.UnaryUnaryMultiCallable[Req, Resp]):
    """A unary-unary method of an :class:`AsyncChannel` (what the generated stub holds).

    Besides grpc's keyword arguments, a call takes ``priority=``,
    ``strategy=`` and ``idempotent=`` for itself alone.
    """

    __slots__ = ("_bare_direct", "_callables", "_core", "_direct", "_shared_metadata", "method")

    def __init__(
        self,
        core: ChannelCore[grpc.aio.Channel],
        method: RpcMethod,
        callables: list[Any],
        *,
        shared_metadata: bool = False,
    ) -> None:
        self._core = core
        self._shared_metadata = shared_metadata
        self.method = method
        self._callables = callables
        # Nothing to decide for any call: one target, no breaker, no observers.
        self._direct = core.targets.single and not core.observers
        # ... and a call given only its request makes one attempt.
        self._bare_direct = self._direct and (
            type(core.options.strategy) is SingleAttempt or not method.idempotent
        )

    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        priority: Priority | str | None = None,
        strategy: Strategy | None = None,
        idempotent: bool | None = None,
    ) -> UnaryUnaryCall[Req, Resp]:
        if (
            timeout is None
            and metadata is None
            and priority is None
            and strategy is None
            and idempotent is None
            and credentials is None
            and wait_for_ready is None
            and compression is None
        ):
            return UnaryUnaryCall(self, request, _BARE)
        args = _CallArgs(
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
            priority,
            strategy,
            idempotent,
        )
        return UnaryUnaryCall(self, request, args)

    async def invoke(self, call: UnaryUnaryCall[Req, Resp], request: Req, args: _CallArgs) -> Resp:
        """Run ``call`` (what awaiting it does); it records its own outcome."""
        try:
            call.started()
            core = self._core
            if core.closed:  # the attribute first: every call passes here
                core.check_open()
            now = core.now()
            if core.budget is not None:
                core.budget.deposit(now)
            if args is _BARE and self._bare_direct:
                # The straight path, with nothing given: the deadline and
                # priority come from the context alone.
                remaining = core.expires_at(None, now) - now
                if remaining < core.floor:
                    raise core.too_late(self.method, remaining, ())
                metadata = (
                    _OWN_METADATA[core.own_priority()]
                    if self._shared_metadata
                    else core.own_metadata()
                )
                try:
                    grpc_call = self._callables[0](
                        request, timeout=wire_timeout(remaining), metadata=metadata
                    )
                    call.current = grpc_call
                    response: Resp = await grpc_call
                except grpc.aio.AioRpcError as error:
                    raise self._direct_error(error, self.method, now) from error
                except (Exception, asyncio.CancelledError) as error:
                    if core.closed and not _cancelled_by_its_caller(error):
                        raise core.closed_error(self.method, ()) from None
                    raise
            else:
                response = await self._invoke(call, request, args, now)
        except BaseException as error:
            call.ended(None, error)
            raise
        call.ended(response, None)
        return response

    async def _invoke(
        self, call: UnaryUnaryCall[Req, Resp], request: Req, args: _CallArgs, now: float
    ) -> Resp:
        core = self._core
        refresher = core.targets.refresher
        if refresher is not None:
            # A discovered channel's first call on a loop waits for the first lookup.
            await refresher.ready()
        expires_at = core.expires_at(args.timeout, now)
        metadata = core.metadata(core.priority(args.priority), args.metadata)
        method = self.method
        if args.idempotent is not None and args.idempotent != method.idempotent:
            method = replace(method, idempotent=args.idempotent)
        strategy = args.strategy or core.options.strategy
        if self._direct and (type(strategy) is SingleAttempt or not method.idempotent):
            return await self._direct_call(call, request, args, method, now, expires_at, metadata)
        return await self._planned(call, request, args, method, strategy, now, expires_at, metadata)

    async def _direct_call(
        self,
        call: UnaryUnaryCall[Req, Resp],
        request: Req,
        args: _CallArgs,
        method: RpcMethod,
        start: float,
        expires_at: float,
        metadata: MetadataPairs,
    ) -> Resp:
        core = self._core
        remaining = expires_at - start
        if remaining < core.floor:
            raise core.too_late(method, remaining, ())
        try:
            grpc_call = self._callables[0](
                request,
                timeout=wire_timeout(remaining),
                metadata=metadata,
                credentials=args.credentials,
                wait_for_ready=args.wait_for_ready,
                compression=args.compression,
            )
            call.current = grpc_call
            response: Resp = await grpc_call
        except grpc.aio.AioRpcError as error:
            raise self._direct_error(error, method, start) from error
        except (Exception, asyncio.CancelledError) as error:
            if core.closed and not _cancelled_by_its_caller(error):
                raise core.closed_error(method, ()) from None
            raise
        return response

    def _direct_error(
        self, error: grpc.aio.AioRpcError, method: RpcMethod, start: float
    ) -> CallError:
        core = self._core
        target = core.targets.endpoints[0].address
        code = error.code()
        record = RpcAttempt(0, AttemptKind.FIRST, target, 0.0, core.now() - start, code=code.name)
        return status_error(
            method,
            target,
            code,
            error.details() or "",
            tuple(error.trailing_metadata() or ()),
            by_deadline=True,
            attempts=(record,),
        )

    async def _planned(
        self,
        call: UnaryUnaryCall[Req, Resp],
        request: Req,
        args: _CallArgs,
        method: RpcMethod,
        strategy: Strategy,
        start: float,
        expires_at: float,
        metadata: MetadataPairs,
    ) -> Resp:
        core = self._core
        now = core.now
        watch = RpcWatch(core.observers, method) if core.observers else None
        driver: UnaryCall[grpc.aio.Channel] = UnaryCall.planned(
            core,
            method,
            strategy,
            start=start,
            expires_at=expires_at,
            metadata=metadata,
            watch=watch,
        )
        call.driver = driver
        loop = asyncio.get_running_loop()
        tasks: dict[asyncio.Task[Outcome], int] = {}
        # call.cancel() sets it: wakes the loop wherever it waits (backoff included).
        stopper: asyncio.Future[None] = loop.create_future()
        call.stopper = stopper
        # So does the channel's closing.
        closing: asyncio.Future[None] = loop.create_future()
        unwake = core.waking_on_close(partial(_settle, closing))
        try:
            while True:
                if core.closed and not tasks:
                    raise core.closed_error(method, driver.attempts)
                action = driver.next(now())
                if isinstance(action, Start):
                    attempt = self._attempt(action, request, args)
                    tasks[loop.create_task(attempt)] = action.index
                    continue
                if isinstance(action, Finish):
                    break
                wait = None if action.until is None else max(0.0, action.until - now())
                # With no attempt running, this is the backoff between sequential attempts.
                waiting: set[asyncio.Future[Any]] = {*tasks, stopper, closing}
                await asyncio.wait(waiting, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if stopper.done():
                    raise asyncio.CancelledError(CANCELLED_DETAILS)
                for task in [task for task in tasks if task.done()]:
                    index = tasks.pop(task)
                    driver.finished(index, task.result(), now())
        except BaseException as error:
            self._stop(tasks, driver)
            driver.ended(None, error)
            raise
        finally:
            unwake()
            closing.cancel()
        self._stop(tasks, driver)
        response: Resp = driver.result(action, now())  # type: ignore[assignment]
        call.current = driver.winner_call
        return response

    def _stop(self, tasks: dict[asyncio.Task[Outcome], int], driver: UnaryCall[Any]) -> None:
        if not tasks:
            return
        moment = self._core.now()
        for task, index in tasks.items():
            task.cancel()  # grpc resets the stream; the server's handler is cancelled
            driver.abandon(index, moment)
        tasks.clear()

    async def _attempt(self, start: Start, request: Req, args: _CallArgs) -> Outcome:
        try:
            grpc_call = self._callables[start.slot](
                request,
                timeout=start.timeout,
                metadata=start.metadata,
                credentials=args.credentials,
                wait_for_ready=args.wait_for_ready,
                compression=args.compression,
            )
            response = await grpc_call
        except grpc.aio.AioRpcError as error:
            return Failed(
                error.code(), error.details() or "", tuple(error.trailing_metadata() or ()), error
            )
        except (Exception, asyncio.CancelledError) as error:
            if self._core.closed and not _cancelled_by_its_caller(error):
                return Failed(grpc.StatusCode.CANCELLED, CLOSED_DETAILS, (), None)
            raise
        return Answered(response, grpc_call)


class UnaryUnaryCall(grpc.aio.UnaryUnaryCall[Req, Resp], Generic[Req, Resp]):
    """One call of a unary-unary method: await it for the response.

    The call starts when first awaited. ``attempts`` lists what was tried
    (filled in when the call took the planned path, or failed).
    """

    # Defaults on the class: a call sets only what it uses, and most calls use
    # none of these (one is made per call, so every assignment counts).
    _response: Resp | None = None
    _error: BaseException | None = None
    _done: asyncio.Future[None] | None = None
    _callbacks: tuple[Callable[[Any], None], ...] = ()
    _cancelled = False
    current: Any = None  # the grpc call (or its error) of the winning attempt
    driver: UnaryCall[Any] | None = None
    stopper: asyncio.Future[None] | None = None  # set by cancel() to stop a planned call

    def __init__(self, multi: UnaryUnary[Req, Resp], request: Req, args: _CallArgs) -> None:
        self._multi = multi
        self._request = request
        self._args = args
        self._state = _NEW

    def __await__(self) -> Generator[Any, None, Resp]:
        if self._state == _NEW:
            return self._multi.invoke(self, self._request, self._args).__await__()
        return self._wait().__await__()

    def started(self) -> None:
        self._state = _RUNNING
        if self._cancelled:
            raise asyncio.CancelledError

    def ended(self, response: Resp | None, error: BaseException | None) -> None:
        self._response = response
        self._error = error
        self._finish()

    async def _wait(self) -> Resp:
        if self._state != _DONE:
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._done)
        if self._error is not None:
            raise self._error
        return self._response  # type: ignore[return-value]

    def _finish(self) -> None:
        self._state = _DONE
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        for callback in self._callbacks:
            callback(self)

    @property
    def attempts(self) -> tuple[RpcAttempt, ...]:
        """The attempts made, when known (the straight path records only failures)."""
        if self.driver is not None:
            return self.driver.attempts
        error = self._error
        return error.attempts if isinstance(error, CallError) else ()  # type: ignore[return-value]

    # ------------------------------------------------------------ grpc.aio.Call

    def cancelled(self) -> bool:
        return self._cancelled or isinstance(self._error, asyncio.CancelledError)

    def done(self) -> bool:
        return self._state == _DONE

    def time_remaining(self) -> float | None:
        driver = self.driver
        if driver is not None:
            return max(driver.expires_at - self._multi._core.now(), 0.0)
        current = self.current
        return current.time_remaining() if isinstance(current, grpc.aio.Call) else None

    def cancel(self) -> bool:
        """Cancel the call: awaiting it raises CancelledError, ``code()`` is CANCELLED.

        As with grpc.aio, this works before the call is first awaited too:
        it never starts, and is done at once.
        """
        if self._state == _DONE:
            return False
        self._cancelled = True
        if self._state == _NEW:
            self.ended(None, asyncio.CancelledError(CANCELLED_DETAILS))
        elif self.stopper is not None:
            if not self.stopper.done():
                self.stopper.set_result(None)
        elif isinstance(self.current, grpc.aio.Call):
            self.current.cancel()
        return True

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._state == _DONE:
            callback(self)
        else:
            self._callbacks = (*self._callbacks, callback)

    async def _settled(self) -> Any:
        try:
            if self._state == _NEW:
                await self
            elif self._state == _RUNNING:
                await self._wait()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was cancelled, not (only) the call
        except Exception:  # the accessors report the call's error, they do not raise it
            pass
        return self.current

    async def initial_metadata(self) -> grpc.aio.Metadata:
        current = await self._settled()
        if isinstance(current, grpc.aio.Call):
            return await current.initial_metadata()
        if isinstance(current, grpc.aio.AioRpcError):
            return current.initial_metadata()
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        current = await self._settled()
        if isinstance(current, grpc.aio.Call):
            return await current.trailing_metadata()
        if isinstance(current, grpc.aio.AioRpcError):
            return current.trailing_metadata()
        return grpc.aio.Metadata()

    async def code(self) -> grpc.StatusCode:
        """The winning attempt's status; for a call refused before sending, what grpc would say."""
        current = await self._settled()
        if isinstance(current, grpc.aio.Call):
            return await current.code()
        if isinstance(current, grpc.aio.AioRpcError):
            return current.code()
        return code_of(self._error)

    async def details(self) -> str:
        current = await self._settled()
        if isinstance(current, grpc.aio.Call):
            return await current.details()
        if isinstance(current, grpc.aio.AioRpcError):
            return current.details() or ""
        if self._cancelled:
            return CANCELLED_DETAILS
        return details_of(self._error)

    async def wait_for_connection(self) -> None:
        await self._settled()


def _cancelled_by_its_caller(error: BaseException) -> bool:
    """Whether ``error`` is a cancellation of the running task itself (not grpc's doing).

    grpc.aio ends a call whose channel closed with a bare CancelledError, in
    a task nobody cancelled, and refuses a call on a closed channel with its
    own UsageError: both mean CANCELLED here, as in the blocking channel.
    """
    if not isinstance(error, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
