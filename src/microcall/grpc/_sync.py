"""Channel: the blocking twin of AsyncChannel, for grpcio's blocking stubs.

::

    channel = Channel("recommendations:50051", ChannelOptions(strategy=microcall.retry(3)))
    stub = recommendations_pb2_grpc.RecommendationsStub(channel)
    reply = stub.Recommend(request)            # or .with_call(...), .future(...)

The calling thread drives the call itself, with grpcio's blocking channels
(one per target), rather than handing it to an event loop: a blocking grpc
call costs far less than a trip through a loop thread, and the decisions are
the same call driver's as every other call's (:mod:`microcall._driver`,
adapted to gRPC by :mod:`microcall.grpc._unary`). A call with one attempt on
one target takes grpc's own blocking path; a planned one sends each attempt
with ``future()`` and waits for the first to end.

The deadline and priority come from the calling thread's context, so a
handler of a blocking grpc server (or a WSGI view) passes its own on.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from microcall._attempt import AttemptKind
from microcall.grpc._channel import ChannelBase, Deserializer, Serializer
from microcall.grpc._core import ChannelCore, status_error, status_of, wire_timeout
from microcall.grpc._observe import Cardinality, RpcAttempt, RpcMethod, RpcObserver, RpcWatch
from microcall.grpc._options import ChannelOptions
from microcall.grpc._security import channel_credentials
from microcall.grpc._sync_streams import BlockingStreaming, CallFuture, Cancellation
from microcall.grpc._unary import Answered, Failed, Outcome, Start, UnaryCall
from microcall.policy.strategy import Finish, SingleAttempt, Strategy
from microcall.priority import Priority

Req = TypeVar("Req")
Resp = TypeVar("Resp")

if TYPE_CHECKING:
    _UnaryBase = grpc.UnaryUnaryMultiCallable
else:  # grpcio's blocking classes are generic only in its typing stubs

    class _UnaryBase(grpc.UnaryUnaryMultiCallable, Generic[Req, Resp]):
        __slots__ = ()


class Channel(ChannelBase[grpc.Channel, BlockingStreaming], grpc.Channel):  # type: ignore[misc]  # our stream callables stand in for grpc's
    """A blocking grpc channel to one or more targets, for generated stubs: see the module doc."""

    def __init__(
        self,
        targets: str | Sequence[str],
        options: ChannelOptions | None = None,
        *,
        observers: Sequence[RpcObserver] = (),
        channel_factory: Callable[[str], grpc.Channel] | None = None,
    ) -> None:
        chosen = options or ChannelOptions()
        super().__init__(
            targets,
            chosen,
            observers,
            channel_factory or partial(_new_channel, chosen),
            threaded=True,
        )
        # Only a planned call's future() needs a thread; made on first use.
        self._executor: futures.ThreadPoolExecutor | None = None

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> BlockingUnaryUnary[Any, Any]:
        callables = self._callables(
            "unary_unary", method, request_serializer, response_deserializer, _registered_method
        )
        return BlockingUnaryUnary(
            self._core, self._method(method, "unary_unary"), callables, self._executor_for
        )

    def _streaming(
        self,
        cardinality: Cardinality,
        method: str,
        request_serializer: Serializer,
        response_deserializer: Deserializer,
        registered: bool | None,
    ) -> BlockingStreaming:
        callables = self._callables(
            cardinality, method, request_serializer, response_deserializer, registered
        )
        return BlockingStreaming(
            self._core, self._method(method, cardinality), callables, self._executor_for
        )

    def _executor_for(self) -> futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = futures.ThreadPoolExecutor(thread_name_prefix="microcall-grpc")
        return self._executor

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Subscribe to every target's connectivity (the callback hears each channel)."""
        for channel in self._core.targets.channels:
            channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        for channel in self._core.targets.channels:
            channel.unsubscribe(callback)

    def close(self) -> None:
        """Close every target's channel; calls in flight end with CANCELLED.

        Calls waiting out a backoff end at once, with CANCELLED too; calls made
        after it raise UsageError.
        """
        self._core.close()
        for channel in self._core.targets.channels:
            channel.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Channel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


def _new_channel(options: ChannelOptions, target: str) -> grpc.Channel:
    credentials = channel_credentials(target, options.credentials, options.insecure)
    if credentials is None:
        return grpc.insecure_channel(
            target, options=options.grpc_options, compression=options.compression
        )
    return grpc.secure_channel(
        target, credentials, options=options.grpc_options, compression=options.compression
    )


class BlockingUnaryUnary(_UnaryBase[Req, Resp]):
    """A unary-unary method of a :class:`Channel` (what the generated stub holds).

    Besides grpc's arguments, a call takes ``priority=``, ``strategy=`` and
    ``idempotent=`` for itself alone.
    """

    __slots__ = ("_callables", "_core", "_direct", "_executor", "method")

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
        self._direct = core.targets.single and not core.observers

    def __call__(
        self,
        request: Req,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        priority: Priority | str | None = None,
        strategy: Strategy | None = None,
        idempotent: bool | None = None,
    ) -> Resp:
        extra = (credentials, wait_for_ready, compression)
        response, _ = self._invoke(
            request, timeout, metadata, extra, priority, strategy, idempotent, with_call=False
        )
        return response

    def with_call(
        self,
        request: Req,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        priority: Priority | str | None = None,
        strategy: Strategy | None = None,
        idempotent: bool | None = None,
    ) -> tuple[Resp, grpc.Call]:
        """The response and the winning attempt's grpc call (for its metadata and status)."""
        extra = (credentials, wait_for_ready, compression)
        return self._invoke(
            request, timeout, metadata, extra, priority, strategy, idempotent, with_call=True
        )

    def future(  # type: ignore[override]
        self,
        request: Req,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        priority: Priority | str | None = None,
        strategy: Strategy | None = None,
        idempotent: bool | None = None,
    ) -> CallFuture:
        """The call running in the background: a grpc Future (and Call) of its response.

        The deadline and priority are taken from the calling thread's context
        now. ``cancel()`` stops it at once, also while it runs.
        """
        core = self._core
        core.check_open()
        # Fix the deadline here, capped by the context's as any call's is: the
        # worker thread has no context of its own.
        now = core.now()
        expires_at = core.expires_at(timeout, now)
        cancellation = Cancellation()
        submitted = self._executor().submit(
            self._invoke,
            request,
            max(expires_at - now, 0.0),
            metadata,
            (credentials, wait_for_ready, compression),
            core.priority(priority),
            strategy,
            idempotent,
            with_call=True,
            cancellation=cancellation,
        )
        return CallFuture(submitted, cancellation, expires_at, core.now)

    def _invoke(
        self,
        request: Req,
        timeout: float | None,
        metadata: Any,
        extra: tuple[Any, Any, Any],
        priority: Priority | str | None,
        strategy: Strategy | None,
        idempotent: bool | None,
        *,
        with_call: bool,
        cancellation: Cancellation | None = None,
    ) -> tuple[Resp, Any]:
        core = self._core
        if core.closed:  # the attribute first: every call passes here
            core.check_open()
        now = core.now()
        if core.budget is not None:
            with core.lock:
                core.budget.deposit(now)
        expires_at = core.expires_at(timeout, now)
        pairs = core.metadata(core.priority(priority), metadata)
        method = self.method
        if idempotent is not None and idempotent != method.idempotent:
            method = replace(method, idempotent=idempotent)
        chosen = strategy or core.options.strategy
        if self._direct and (type(chosen) is SingleAttempt or not method.idempotent):
            remaining = expires_at - now
            if remaining < core.floor:
                raise core.too_late(method, remaining, ())
            remaining = wire_timeout(remaining)
            credentials, wait_for_ready, compression = extra
            first = self._callables[0]
            try:
                if cancellation is not None:
                    # grpc's future, which cancel() can reach while it runs.
                    call = first.future(
                        request, remaining, pairs, credentials, wait_for_ready, compression
                    )
                    return cancellation.result_of(call), call
                if with_call:
                    response, call = first.with_call(
                        request, remaining, pairs, credentials, wait_for_ready, compression
                    )
                    return response, call
                return first(
                    request, remaining, pairs, credentials, wait_for_ready, compression
                ), None
            except grpc.RpcError as error:
                raise self._direct_error(method, error, now) from error
            except ValueError:  # grpc's "Cannot invoke RPC: Channel closed!"
                if not core.closed:
                    raise
                raise core.closed_error(method, ()) from None
        return self._planned(request, extra, method, chosen, now, expires_at, pairs, cancellation)

    def _direct_error(self, method: RpcMethod, error: grpc.RpcError, start: float) -> Exception:
        core = self._core
        target = core.targets.endpoints[0].address
        code, details, trailing = status_of(error)
        record = RpcAttempt(0, AttemptKind.FIRST, target, 0.0, core.now() - start, code=code.name)
        return status_error(
            method, target, code, details, trailing, by_deadline=True, attempts=(record,)
        )

    def _planned(
        self,
        request: Req,
        extra: tuple[Any, Any, Any],
        method: RpcMethod,
        strategy: Strategy,
        start: float,
        expires_at: float,
        metadata: tuple[tuple[str, str | bytes], ...],
        cancellation: Cancellation | None,
    ) -> tuple[Resp, Any]:
        core = self._core
        now = core.now
        lock = core.lock
        watch = RpcWatch(core.observers, method) if core.observers else None
        with lock:
            driver: UnaryCall[grpc.Channel] = UnaryCall.planned(
                core,
                method,
                strategy,
                start=start,
                expires_at=expires_at,
                metadata=metadata,
                watch=watch,
            )
        ended: queue.SimpleQueue[int] = queue.SimpleQueue()
        running: dict[int, Any] = {}
        credentials, wait_for_ready, compression = extra
        if cancellation is not None:
            cancellation.on_cancel(partial(ended.put, _WAKE))
        # A channel closed during a backoff ends the call at once.
        unwake = core.waking_on_close(partial(ended.put, _WAKE))
        try:
            while True:
                if cancellation is not None:
                    cancellation.check()
                if core.closed and not running:
                    raise core.closed_error(method, driver.attempts)
                with lock:
                    action = driver.next(now())
                if isinstance(action, Start):
                    try:
                        future = self._callables[action.slot].future(
                            request,
                            action.timeout,
                            action.metadata,
                            credentials,
                            wait_for_ready,
                            compression,
                        )
                    except ValueError:  # grpc's "Cannot invoke RPC: Channel closed!"
                        if not core.closed:
                            raise
                        raise core.closed_error(method, driver.attempts) from None
                    running[action.index] = future
                    if cancellation is not None:
                        cancellation.watch(future)
                    future.add_done_callback(partial(_put, ended, action.index))
                    continue
                if isinstance(action, Finish):
                    break
                wait = None if action.until is None else max(0.0, action.until - now())
                if not running and not wait:
                    continue
                try:
                    # With nothing running: the backoff between sequential attempts.
                    index = ended.get(timeout=wait)
                except queue.Empty:
                    continue
                future = running.pop(index, None)
                if future is not None:
                    outcome = _outcome_of(future)
                    with lock:
                        driver.finished(index, outcome, now())
        except BaseException as error:
            self._stop(running, driver)
            driver.ended(None, error)
            raise
        finally:
            unwake()
        self._stop(running, driver)
        with lock:
            response: Resp = driver.result(action, now())  # type: ignore[assignment]
        return response, driver.winner_call

    def _stop(self, running: dict[int, Any], driver: UnaryCall[Any]) -> None:
        if not running:
            return
        moment = self._core.now()
        for future in running.values():
            future.cancel()  # grpc resets the stream; the server's handler is cancelled
        with self._core.lock:
            for index in running:
                driver.abandon(index, moment)
        running.clear()


# What a cancellation puts on the queue of ended attempts: no attempt's index.
_WAKE = -1


def _put(ended: queue.SimpleQueue[int], index: int, _: object) -> None:
    ended.put(index)


def _outcome_of(future: Any) -> Outcome:
    error = future.exception()
    if error is None:
        return Answered(future.result(), future)
    if isinstance(error, grpc.RpcError):
        code, details, trailing = status_of(error)
        return Failed(code, details, trailing, error)
    raise error  # a bug (a serializer that failed, say), not an outcome
