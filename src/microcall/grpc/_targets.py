"""A channel's targets: one grpc channel each, balanced, with a breaker and ejection per target.

The same decisions as an HTTP client's replicas (:mod:`microcall._replicas`),
over gRPC targets (``"10.0.0.7:50051"``) instead of base URLs: the balancer
picks the target of each attempt (power of two choices on peak-EWMA latency
x outstanding, or round robin), a hedge avoids the targets already tried, an
open breaker or an ejection takes a target out of rotation. Every attempt is
reported here; the policies decide.

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

from microcall._replicas import _log_breaker, _log_ejection
from microcall.errors import ConfigurationError
from microcall.policy.balancer import Balancer, BalancerConfig, Endpoint, EndpointStats
from microcall.policy.breaker import BreakerStateChange, CircuitBreaker, CircuitBreakerConfig
from microcall.policy.ejection import Ejection, OutlierDetector, OutlierEjectionConfig

C = TypeVar("C")


class Targets(Generic[C]):
    """The targets of one channel wrapper and the grpc channel of each."""

    __slots__ = (
        "_breaker_config",
        "_by_address",
        "_decay_time",
        "balancer",
        "breaker_events",
        "ejection_events",
        "endpoints",
        "single",
    )

    def __init__(
        self,
        targets: Sequence[str],
        channel_for: Callable[[str], C],
        *,
        balancer: BalancerConfig,
        breaker: CircuitBreakerConfig | None,
        ejection: OutlierEjectionConfig | None,
        rng: random.Random | None = None,
    ) -> None:
        addresses = list(dict.fromkeys(targets))
        if not addresses or not all(isinstance(a, str) and a for a in addresses):
            raise ConfigurationError(
                f"a channel needs one or more targets like '127.0.0.1:50051', got {targets!r}"
            )
        self.breaker_events: list[Callable[[BreakerStateChange], None]] = [_log_breaker]
        self.ejection_events: list[Callable[[Ejection], None]] = [_log_ejection]
        self._breaker_config = breaker
        self._decay_time = balancer.decay_time
        outliers = (
            None
            if ejection is None or len(addresses) < 2
            else OutlierDetector(addresses, ejection, listeners=self.ejection_events)
        )
        self.balancer = Balancer(
            addresses, balancer, rng=rng, outliers=outliers, new_endpoint=self._new_endpoint
        )
        self.endpoints = self.balancer.endpoints
        self._by_address: dict[str, tuple[int, C]] = {}
        for index, address in enumerate(addresses):
            self._by_address[address] = (index, channel_for(address))
        # One target and nothing to decide: attempts skip balancing altogether.
        self.single = len(addresses) == 1 and breaker is None

    def _new_endpoint(self, address: str) -> Endpoint:
        breaker = (
            None
            if self._breaker_config is None
            else CircuitBreaker(address, self._breaker_config, listeners=self.breaker_events)
        )
        return Endpoint(address, EndpointStats(self._decay_time), breaker)

    @property
    def channels(self) -> list[C]:
        """The grpc channel of each target, in the order given."""
        return [channel for _, channel in self._by_address.values()]

    def slot_of(self, endpoint: Endpoint) -> int:
        """The position of ``endpoint``'s target in the order given."""
        return self._by_address[endpoint.address][0]

    def pick(self, now: float, exclude: Sequence[Endpoint]) -> Endpoint:
        return self.balancer.pick(now, exclude)

    def finished(self, endpoint: Endpoint, latency: float, success: bool, now: float) -> None:
        """An attempt on ``endpoint`` ended with an outcome."""
        endpoint.stats.finish(latency, success, now)
        if endpoint.breaker is not None:
            endpoint.breaker.record(success, now)
        outliers = self.balancer.outliers
        if outliers is not None:
            outliers.record(endpoint.address, success, now)

    def abandoned(self, endpoint: Endpoint, latency: float, now: float) -> None:
        """An attempt on ``endpoint`` was cancelled before its outcome arrived."""
        endpoint.stats.finish(latency, False, now)
        if endpoint.breaker is not None:
            endpoint.breaker.release(now)
