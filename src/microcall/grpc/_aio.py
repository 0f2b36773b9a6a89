"""AsyncChannel: a grpc.aio channel whose calls carry microcall's deadlines, priority and policies.

::

    channel = AsyncChannel(["10.0.0.7:50051", "10.0.0.8:50051"],
                           ChannelOptions(strategy=microcall.hedged()))
    stub = recommendations_pb2_grpc.RecommendationsStub(channel)   # the generated stub, unchanged
    reply = await stub.Recommend(request)

It wraps one grpc.aio channel per target and hands the generated stub
multi-callables of its own (:mod:`._aio_unary`, :mod:`._aio_streams`).

A call starts when it is awaited (grpc.aio starts it at once); its
``code()``, ``details()`` and metadata are the winning attempt's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from microcall.grpc._aio_streams import StreamingCallable
from microcall.grpc._aio_unary import UnaryUnary
from microcall.grpc._core import ChannelCore
from microcall.grpc._observe import Cardinality, RpcMethod, RpcObserver
from microcall.grpc._options import ChannelOptions
from microcall.grpc._targets import Targets
from microcall.policy.budget import RetryBudget


class AsyncChannel(grpc.aio.Channel):
    """A grpc.aio channel to one or more targets, for generated stubs: see the module doc.

    ``channel_factory(target)`` makes the grpc.aio channel of each target
    (default: an insecure or secure channel with ``options``' grpc settings).
    ``observers`` follow every call and attempt (:class:`RpcObserver`).
    """

    def __init__(
        self,
        targets: str | Sequence[str],
        options: ChannelOptions | None = None,
        *,
        observers: Sequence[RpcObserver] = (),
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        self.options = options = options or ChannelOptions()
        factory = channel_factory or partial(_new_channel, options)
        self._own_channels = channel_factory is None
        group = Targets(
            [targets] if isinstance(targets, str) else list(targets),
            factory,
            balancer=options.balancer,
            breaker=options.breaker,
            ejection=options.ejection,
        )
        self._core = ChannelCore(options, group, observers)

    @property
    def targets(self) -> Targets[grpc.aio.Channel]:
        """The targets: balancer, breakers and ejection state, and their grpc channels."""
        return self._core.targets

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget shared by this channel's calls (None when disabled)."""
        return self._core.budget

    def _method(self, name: str, cardinality: Cardinality) -> RpcMethod:
        return RpcMethod.parse(
            name,
            cardinality,
            idempotent=self.options.is_idempotent(name),
            authority=self._core.targets.endpoints[0].address,
        )

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> UnaryUnary[Any, Any]:
        callables = [
            _callable(
                channel.unary_unary,
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            )
            for channel in self._core.targets.channels
        ]
        return UnaryUnary(
            self._core,
            self._method(method, "unary_unary"),
            callables,
            shared_metadata=self._own_channels,
        )

    def unary_stream(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> StreamingCallable:
        return self._streaming(
            "unary_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_unary(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> StreamingCallable:
        return self._streaming(
            "stream_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_stream(  # type: ignore[override]
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> StreamingCallable:
        return self._streaming(
            "stream_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def _streaming(
        self,
        cardinality: Cardinality,
        method: str,
        request_serializer: Callable[[Any], bytes] | None,
        response_deserializer: Callable[[bytes], Any] | None,
        registered: bool | None,
    ) -> StreamingCallable:
        callables = [
            _callable(
                getattr(channel, cardinality),
                method,
                request_serializer,
                response_deserializer,
                registered,
            )
            for channel in self._core.targets.channels
        ]
        return StreamingCallable(self._core, self._method(method, cardinality), callables)

    async def close(self, grace: float | None = None) -> None:
        """Close every target's channel (calls in flight get ``grace`` seconds)."""
        await asyncio.gather(*(channel.close(grace) for channel in self._core.targets.channels))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state among the targets' channels (READY if any is ready)."""
        states = [channel.get_state(try_to_connect) for channel in self._core.targets.channels]
        return min(states, key=_STATE_RANK.__getitem__)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return when any target's channel leaves ``last_observed_state``."""
        waits = [
            asyncio.ensure_future(channel.wait_for_state_change(last_observed_state))
            for channel in self._core.targets.channels
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def channel_ready(self) -> None:
        """Return once some target's channel is ready for calls."""
        waits = [
            asyncio.ensure_future(channel.channel_ready())
            for channel in self._core.targets.channels
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def __aenter__(self) -> AsyncChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close(None)


_STATE_RANK = {
    grpc.ChannelConnectivity.READY: 0,
    grpc.ChannelConnectivity.IDLE: 1,
    grpc.ChannelConnectivity.CONNECTING: 2,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: 3,
    grpc.ChannelConnectivity.SHUTDOWN: 4,
}


def _new_channel(options: ChannelOptions, target: str) -> grpc.aio.Channel:
    if options.credentials is None:
        return grpc.aio.insecure_channel(
            target, options=options.grpc_options, compression=options.compression
        )
    return grpc.aio.secure_channel(
        target, options.credentials, options=options.grpc_options, compression=options.compression
    )


def _callable(
    factory: Callable[..., Any],
    method: str,
    request_serializer: Callable[[Any], bytes] | None,
    response_deserializer: Callable[[bytes], Any] | None,
    registered: bool | None,
) -> Any:
    # _registered_method lets grpc skip a method-name lookup per call; the
    # typing stubs do not know it yet.
    return factory(method, request_serializer, response_deserializer, _registered_method=registered)
