"""AsyncServerInterceptor: microcall's server gate for grpc.aio servers.

::

    from microcall.grpc import AsyncServerInterceptor
    from microcall.server import ServerOptions, Shedding, GradientLimit

    protect = AsyncServerInterceptor(ServerOptions(shedding=Shedding(limit=GradientLimit())))
    server = grpc.aio.server(interceptors=[protect])
    ...
    protect.stats.snapshot()   # admitted, expired, shed_low, ...

Inside a handler, ``microcall.current_deadline()`` and
``microcall.current_priority()`` are the call's, and every microcall call
the handler makes (HTTP or gRPC) inherits them. A call is refused before its
handler runs when it arrives expired (DEADLINE_EXCEEDED) or when the
concurrency limit has no room for its priority (RESOURCE_EXHAUSTED); see
:mod:`._server`. Handlers are the async ones grpc.aio documents (coroutines,
and async generators for response streams); a blocking handler on an aio
server is passed through unprotected, with a warning.

grpc.aio cancels a handler when its caller's deadline passes; with
``cancel_on_deadline`` a unary-response handler is also cancelled at the
server's own default deadline (a caller that set none), answering
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio

from microcall.server._admission import Admission
from microcall.server._cancel import DeadlineCancelled, within_deadline
from microcall.server._config import ServerOptions
from microcall.server._grpc_gate import (
    DEFAULT_EXEMPT,
    InterceptorBase,
    RpcGate,
    RpcRefusal,
    behavior_of,
    route_timeout,
)
from microcall.server._grpc_watch import finish, start_watch
from microcall.server._serverwatch import ServerWatch
from microcall.server._stats import ServerStats

__all__ = ["AsyncServerInterceptor"]

log = logging.getLogger("microcall")

if TYPE_CHECKING:  # grpcio's classes are generic only in its typing stubs
    Continuation = Callable[
        [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
    ]


class AsyncServerInterceptor(InterceptorBase, grpc.aio.ServerInterceptor):
    """A grpc.aio server interceptor (``grpc.aio.server(interceptors=[...])``).

    One instance per server: it owns the concurrency limit and the stats. Methods and
    services in ``exempt`` pass through untouched (by default the standard health
    service, whose probes must never be shed and whose Watch streams last for ever).
    """

    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        stats: ServerStats | None = None,
        exempt: Collection[str] = DEFAULT_EXEMPT,
    ) -> None:
        super().__init__(options, stats, exempt)
        self._cancel = self._gate.options.cancel_on_deadline

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._protected(await continuation(handler_call_details), handler_call_details)

    def _wrap(self, handler: Any, method: str) -> Any:
        behavior, make = behavior_of(handler)
        if inspect.isasyncgenfunction(behavior):
            protected: Any = self._stream_of(behavior)
            if self._observers:
                protected = self._observed_stream(protected, method)
        elif inspect.iscoroutinefunction(behavior):
            protected = self._coroutine_of(behavior)
            if self._observers:
                protected = self._observed_coroutine(protected, method)
        else:
            log.warning("%s has a blocking handler on a grpc.aio server: not protected", method)
            return handler
        return make(
            protected,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _coroutine_of(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        gate = self._gate
        own_timeout = route_timeout(behavior)
        cancel = self._cancel

        async def protected(
            request: Any,
            context: grpc.aio.ServicerContext[Any, Any],
            watch: ServerWatch | None = None,
        ) -> Any:
            admission = gate.admit(context, own_timeout)
            if isinstance(admission, RpcRefusal):
                await _refuse(context, admission, watch)
            admission.enter()
            try:
                if cancel:
                    result = await within_deadline(admission, behavior(request, context))
                else:
                    result = await behavior(request, context)
            except DeadlineCancelled:
                gate.stats.add("cancelled")
                admission.finish(cancelled=True)
                await _refuse(context, gate.expired)
            except BaseException as error:
                _ended_early(gate, admission, error)
                raise
            finally:
                admission.leave()
            admission.finish()
            return result

        return protected

    def _stream_of(self, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        gate = self._gate
        own_timeout = route_timeout(behavior)

        async def protected(
            request: Any,
            context: grpc.aio.ServicerContext[Any, Any],
            watch: ServerWatch | None = None,
        ) -> AsyncIterator[Any]:
            admission = gate.admit(context, own_timeout)
            if isinstance(admission, RpcRefusal):
                await _refuse(context, admission, watch)
            admission.enter()
            try:
                async for message in behavior(request, context):
                    yield message
            except BaseException as error:
                _ended_early(gate, admission, error)
                raise
            finally:
                admission.leave()
            admission.finish()

        return protected

    def _observed_coroutine(
        self, protected: Callable[..., Awaitable[Any]], method: str
    ) -> Callable[..., Any]:
        observers = self._observers

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # Made here, in the handler's task: a tracer's span is current for the handler.
            watch = start_watch(observers, method, context.invocation_metadata())
            try:
                result = await protected(request, context, watch)
            except BaseException as error:
                finish(watch, method, context, error)
                raise
            finish(watch, method, context, None)
            return result

        return observed

    def _observed_stream(
        self, protected: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., Any]:
        observers = self._observers

        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            watch = start_watch(observers, method, context.invocation_metadata())
            try:
                async for message in protected(request, context, watch):
                    yield message
            except BaseException as error:
                finish(watch, method, context, error)
                raise
            finish(watch, method, context, None)

        return observed


async def _refuse(
    context: grpc.aio.ServicerContext[Any, Any],
    refusal: RpcRefusal,
    watch: ServerWatch | None = None,
) -> NoReturn:
    if watch is not None and refusal.kind:
        watch.refused(refusal.kind, refusal.priority)
    await context.abort(refusal.code, refusal.details, refusal.trailing_metadata)


def _ended_early(gate: RpcGate, admission: Admission, error: BaseException) -> None:
    """Free the call's slot after its handler raised (or was cancelled)."""
    if isinstance(error, grpc.aio.AbortError):
        admission.finish()  # the handler answered with a status: an answer like any other
    elif isinstance(error, asyncio.CancelledError) and admission.deadline.expired():
        gate.stats.add("cancelled")  # grpc cancelled it at the caller's deadline
        admission.finish(cancelled=True)
    else:
        admission.fail()
