"""A channel's targets: one grpc channel each, balanced, with a breaker and ejection per target.

The same decisions as an HTTP client's replicas (both are a
:class:`~microcall._group.EndpointGroup`), over gRPC targets
(``"10.0.0.7:50051"``) instead of base URLs: the balancer picks the target
of each attempt (power of two choices on peak-EWMA latency x outstanding, or
round robin), a hedge avoids the targets already tried, an open breaker or an
ejection takes a target out of rotation. Every attempt is reported here; the
policies decide.

gRPC's own resolver and load balancing still work inside each channel: a
single ``"dns:///recommendations:50051"`` target with grpc's ``round_robin``
policy spreads calls over the addresses of one name. microcall's balancing
is for a list of targets, each its own channel, so that latency-aware
picking, breakers and hedging onto another replica apply across them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from microcall._group import EndpointGroup
from microcall.errors import ConfigurationError
from microcall.policy.balancer import BalancerConfig, Endpoint
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.ejection import OutlierEjectionConfig

C = TypeVar("C")


class Targets(EndpointGroup, Generic[C]):
    """The targets of one channel wrapper and the grpc channel of each.

    ``watch_loop``: the channel's attempts all run on one event loop (an
    ``AsyncChannel``'s) and its times are the real monotonic clock, so the
    group may watch that loop for the client's own stalls (see
    :mod:`microcall._group`). A blocking ``Channel``'s attempts run on its
    callers' threads: nothing to watch.
    """

    __slots__ = ("_by_address", "single")

    def __init__(
        self,
        targets: Sequence[str],
        channel_for: Callable[[str], C],
        *,
        balancer: BalancerConfig,
        breaker: CircuitBreakerConfig | None,
        ejection: OutlierEjectionConfig | None,
        rng: random.Random | None = None,
        watch_loop: bool = False,
    ) -> None:
        addresses = list(dict.fromkeys(targets))
        if not addresses or not all(isinstance(a, str) and a for a in addresses):
            raise ConfigurationError(
                f"a channel needs one or more targets like '127.0.0.1:50051', got {targets!r}"
            )
        super().__init__(
            addresses,
            balancer=balancer,
            breaker=breaker,
            # A fixed list of one has nowhere else to send its calls.
            ejection=ejection if len(addresses) > 1 else None,
            rng=rng,
            watch_loop=watch_loop,
        )
        self._by_address: dict[str, tuple[int, C]] = {}
        for index, address in enumerate(addresses):
            self._by_address[address] = (index, channel_for(address))
        # One target and nothing to decide: attempts skip balancing altogether.
        self.single = len(addresses) == 1 and breaker is None

    @property
    def channels(self) -> list[C]:
        """The grpc channel of each target, in the order given."""
        return [channel for _, channel in self._by_address.values()]

    def slot_of(self, endpoint: Endpoint) -> int:
        """The position of ``endpoint``'s target in the order given."""
        return self._by_address[endpoint.address][0]
