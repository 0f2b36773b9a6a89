"""ServerInterceptor: microcall's server gate for grpcio's blocking (thread pool) servers.

::

    protect = ServerInterceptor(ServerOptions(default_timeout=5.0))
    server = grpc.server(ThreadPoolExecutor(16), interceptors=[protect])

The same gate as the grpc.aio interceptor (:mod:`._server`): the call's
deadline and priority are set in the worker thread's context while the
handler runs (for a response stream, while the server pulls each message),
so a :class:`~microcall.grpc.Channel`, ``Client`` or ``FuturesClient`` call
made there inherits them. A thread cannot be cancelled, so
``cancel_on_deadline`` is refused: check ``microcall.current_deadline()``
in long loops instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from microcall.errors import ConfigurationError
from microcall.server._config import ServerOptions
from microcall.server._grpc_gate import (
    DEFAULT_EXEMPT,
    InterceptorBase,
    RpcRefusal,
    behavior_of,
    route_timeout,
)
from microcall.server._grpc_watch import finish, start_watch
from microcall.server._serverwatch import ServerWatch
from microcall.server._stats import ServerStats

if TYPE_CHECKING:  # grpcio's classes are generic only in its typing stubs
    Continuation = Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None]


__all__ = ["ServerInterceptor"]


class ServerInterceptor(InterceptorBase, grpc.ServerInterceptor):
    """A blocking grpc server interceptor (``grpc.server(executor, interceptors=[...])``).

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
        if options is not None and options.cancel_on_deadline:
            raise ConfigurationError(
                "cancel_on_deadline needs an async handler; a worker thread cannot be cancelled"
            )
        super().__init__(options, stats, exempt)

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._protected(continuation(handler_call_details), handler_call_details)

    def _wrap(self, handler: Any, method: str) -> Any:
        behavior, make = behavior_of(handler)
        streaming = handler.response_streaming
        protected = self._stream_of(behavior) if streaming else self._call_of(behavior)
        if self._observers:
            observe = self._observed_stream if streaming else self._observed_call
            protected = observe(protected, method)
        return make(
            protected,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _call_of(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        gate = self._gate
        own_timeout = route_timeout(behavior)

        def protected(
            request: Any, context: grpc.ServicerContext, watch: ServerWatch | None = None
        ) -> Any:
            admission = gate.admit(context, own_timeout)
            if isinstance(admission, RpcRefusal):
                _refuse(context, admission, watch)
            admission.enter()
            try:
                result = behavior(request, context)
            except BaseException:
                admission.fail()
                raise
            finally:
                admission.leave()
            admission.finish()
            return result

        return protected

    def _stream_of(self, behavior: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
        gate = self._gate
        own_timeout = route_timeout(behavior)

        def protected(
            request: Any, context: grpc.ServicerContext, watch: ServerWatch | None = None
        ) -> Iterator[Any]:
            admission = gate.admit(context, own_timeout)
            if isinstance(admission, RpcRefusal):
                _refuse(context, admission, watch)
            admission.enter()
            try:
                produced = behavior(request, context)
                if inspect.isgenerator(produced) or hasattr(produced, "__next__"):
                    yield from produced
                elif produced is not None:
                    yield from iter(produced)
            except BaseException:
                admission.fail()
                raise
            finally:
                admission.leave()
            admission.finish()

        return protected

    def _observed_call(self, protected: Callable[..., Any], method: str) -> Callable[..., Any]:
        observers = self._observers

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            # Made here, in the worker thread: a tracer's span is current for the handler.
            watch = start_watch(observers, method, context.invocation_metadata())
            try:
                result = protected(request, context, watch)
            except BaseException as error:
                finish(watch, method, context, error)
                raise
            finish(watch, method, context, None)
            return result

        return observed

    def _observed_stream(
        self, protected: Callable[..., Iterator[Any]], method: str
    ) -> Callable[..., Iterator[Any]]:
        observers = self._observers

        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            watch = start_watch(observers, method, context.invocation_metadata())
            try:
                yield from protected(request, context, watch)
            except BaseException as error:
                finish(watch, method, context, error)
                raise
            finish(watch, method, context, None)

        return observed


def _refuse(
    context: grpc.ServicerContext, refusal: RpcRefusal, watch: ServerWatch | None = None
) -> NoReturn:
    if watch is not None and refusal.kind:
        watch.refused(refusal.kind, refusal.priority)
    if refusal.trailing_metadata:
        context.set_trailing_metadata(refusal.trailing_metadata)
    context.abort(refusal.code, refusal.details)
