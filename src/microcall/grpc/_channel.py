"""What AsyncChannel and Channel share: the targets, the method descriptions, the streams.

grpc's channel interface has one factory per cardinality; both channels
answer the three streaming ones the same way (a streaming multi-callable of
their own, ``S``) and differ only in what that callable is and in the unary
one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from microcall._clock import MONOTONIC
from microcall.errors import ConfigurationError
from microcall.grpc._core import ChannelCore
from microcall.grpc._discovery import TargetDiscovery
from microcall.grpc._observe import Cardinality, RpcMethod, RpcObserver
from microcall.grpc._options import ChannelOptions
from microcall.grpc._targets import Targets
from microcall.policy.budget import RetryBudget

C = TypeVar("C")  # the grpc channel of one target
S = TypeVar("S")  # the streaming multi-callable the channel hands out

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class ChannelBase(Generic[C, S]):
    """One grpc channel per target under microcall's policies (see the two subclasses)."""

    def __init__(
        self,
        targets: str | Sequence[str] | TargetDiscovery,
        options: ChannelOptions | None,
        observers: Sequence[RpcObserver],
        factory: Callable[[str], C],
        *,
        threaded: bool = False,
    ) -> None:
        self.options = options = options or ChannelOptions()
        discovery = targets if isinstance(targets, TargetDiscovery) else None
        if discovery is not None and threaded:
            raise ConfigurationError(
                "the blocking Channel takes fixed targets; TargetDiscovery needs an AsyncChannel, "
                "whose event loop runs the lookups"
            )
        if discovery is not None:
            # Until the first lookup, the name itself (grpc's resolver behind it).
            initial = [discovery.target]
        elif isinstance(targets, str):
            initial = [targets]
        else:
            initial = list(targets)  # type: ignore[arg-type]  # narrowed above
        group = Targets(
            initial,
            factory,
            balancer=options.balancer,
            breaker=options.breaker,
            ejection=options.ejection,
            # grpc.aio's attempts run on one event loop; the blocking API's
            # on its callers' threads, with no loop to watch.
            watch_loop=not threaded and options.clock is MONOTONIC,
            changing=discovery is not None,
        )
        self._core: ChannelCore[C] = ChannelCore(options, group, observers, threaded=threaded)

    @property
    def targets(self) -> Targets[C]:
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
            authority=self._core.targets.authority,
        )

    def _callables(
        self,
        cardinality: Cardinality,
        method: str,
        request_serializer: Serializer,
        response_deserializer: Deserializer,
        registered: bool | None,
    ) -> list[Any]:
        """Each target's grpc multi-callable for ``method``."""

        # _registered_method lets grpc skip a method-name lookup per call; the
        # typing stubs do not know it yet.
        def make(channel: C) -> Any:
            return getattr(channel, cardinality)(
                method, request_serializer, response_deserializer, _registered_method=registered
            )

        return self._core.targets.callables(make)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> S:
        return self._streaming(
            "unary_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> S:
        return self._streaming(
            "stream_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> S:
        return self._streaming(
            "stream_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def _streaming(
        self,
        cardinality: Cardinality,
        method: str,
        request_serializer: Serializer,
        response_deserializer: Deserializer,
        registered: bool | None,
    ) -> S:
        raise NotImplementedError
