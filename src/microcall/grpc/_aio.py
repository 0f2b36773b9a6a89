"""AsyncChannel: a grpc.aio channel whose calls carry microcall's deadlines, priority and policies.

::

    channel = AsyncChannel(["10.0.0.7:50051", "10.0.0.8:50051"],
                           ChannelOptions(strategy=microcall.hedged()))
    stub = recommendations_pb2_grpc.RecommendationsStub(channel)   # the generated stub, unchanged
    reply = await stub.Recommend(request)

It wraps one grpc.aio channel per target and hands the generated stub
multi-callables of its own (:mod:`._aio_unary`, :mod:`._aio_streams`).
Given a :class:`~microcall.grpc.TargetDiscovery` instead of targets, its
targets are the addresses of a DNS name, looked up again periodically
(:mod:`._discovery`).

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
from microcall.grpc._channel import ChannelBase, Deserializer, Serializer
from microcall.grpc._discovery import TargetDiscovery, TargetRefresher, authority_options
from microcall.grpc._observe import Cardinality, RpcObserver
from microcall.grpc._options import ChannelOptions
from microcall.grpc._security import channel_credentials


class AsyncChannel(ChannelBase[grpc.aio.Channel, StreamingCallable], grpc.aio.Channel):  # type: ignore[misc]  # our stream callables stand in for grpc's
    """A grpc.aio channel to one or more targets, for generated stubs: see the module doc.

    ``targets``: ``"host:port"``, a list of them, or a
    :class:`~microcall.grpc.TargetDiscovery` (one target per address of a
    name, re-resolved every ``every`` seconds on the loop of the calls).
    ``channel_factory(target)`` makes the grpc.aio channel of each target
    (default: an insecure or secure channel with ``options``' grpc settings;
    under discovery, one that keeps the name as authority and TLS server
    name; a factory of your own is given the address target and sets those
    itself). ``observers`` follow every call and attempt (:class:`RpcObserver`).
    """

    def __init__(
        self,
        targets: str | Sequence[str] | TargetDiscovery,
        options: ChannelOptions | None = None,
        *,
        observers: Sequence[RpcObserver] = (),
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        chosen = options or ChannelOptions()
        discovery = targets if isinstance(targets, TargetDiscovery) else None
        factory = channel_factory or partial(_new_channel, chosen, discovery)
        super().__init__(targets, chosen, observers, factory)
        self._own_channels = channel_factory is None
        self._refresher: TargetRefresher | None = None
        if discovery is not None:
            self._refresher = TargetRefresher(discovery, self._core.targets, self._core.now)
            self._core.targets.refresher = self._refresher

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> UnaryUnary[Any, Any]:
        callables = self._callables(
            "unary_unary", method, request_serializer, response_deserializer, _registered_method
        )
        return UnaryUnary(
            self._core,
            self._method(method, "unary_unary"),
            callables,
            shared_metadata=self._own_channels,
        )

    def _streaming(
        self,
        cardinality: Cardinality,
        method: str,
        request_serializer: Serializer,
        response_deserializer: Deserializer,
        registered: bool | None,
    ) -> StreamingCallable:
        callables = self._callables(
            cardinality, method, request_serializer, response_deserializer, registered
        )
        return StreamingCallable(self._core, self._method(method, cardinality), callables)

    async def close(self, grace: float | None = None) -> None:
        """Close every target's channel (calls in flight get ``grace`` seconds).

        Calls in flight, and those waiting out a backoff, end with CANCELLED;
        calls made after it raise UsageError.
        """
        self._core.close()
        targets = self._core.targets
        if self._refresher is not None:
            await self._refresher.aclose()
        await asyncio.gather(*(channel.close(grace) for channel in targets.channels))
        targets.stop_watching()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state among the targets' channels (READY if any is ready)."""
        states = [channel.get_state(try_to_connect) for channel in self._core.targets.current]
        return min(states, key=_STATE_RANK.__getitem__)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return when any target's channel leaves ``last_observed_state``."""
        waits = [
            asyncio.ensure_future(channel.wait_for_state_change(last_observed_state))
            for channel in self._core.targets.current
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def channel_ready(self) -> None:
        """Return once some target's channel is ready for calls (after the first lookup)."""
        if self._refresher is not None:
            await self._refresher.ready()
        waits = [
            asyncio.ensure_future(channel.channel_ready()) for channel in self._core.targets.current
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


def _new_channel(
    options: ChannelOptions, discovery: TargetDiscovery | None, target: str
) -> grpc.aio.Channel:
    grpc_options: Sequence[tuple[str, Any]] = options.grpc_options
    # Under discovery, TLS or not is decided on the name, as for a fixed target.
    named = target if discovery is None else discovery.target
    credentials = channel_credentials(named, options.credentials, options.insecure)
    if discovery is not None and target != discovery.target:
        grpc_options = authority_options(discovery, credentials is not None, grpc_options)
    if credentials is None:
        return grpc.aio.insecure_channel(
            target, options=grpc_options, compression=options.compression
        )
    return grpc.aio.secure_channel(
        target, credentials, options=grpc_options, compression=options.compression
    )
