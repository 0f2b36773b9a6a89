"""What an HTTP client's replicas and a gRPC channel's targets share: the endpoint records.

Per endpoint: peak-EWMA latency and outstanding attempts (for the balancer),
an optional circuit breaker, and a consecutive-failure record for outlier
ejection. Every attempt is reported here (``started``, then ``finished`` or
``abandoned``); the policies decide. Breaker state changes and ejections go
to the listeners in ``breaker_events`` / ``ejection_events`` (a rate-limited
log line by default; metrics subscribe there).

A group whose attempts run on one event loop and are timed on the real
monotonic clock can watch that loop (``watch_loop``; its owner knows both):
the time the client itself could not run is then kept out of the latencies
the balancer learns (see :mod:`microcall._loopwatch`). Callers, metrics and
breakers see latencies as measured.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

from microcall._loopwatch import LoopWatch
from microcall._redact import safe_endpoint
from microcall._validate import instance
from microcall.observe.logs import log_event
from microcall.policy.balancer import Balancer, BalancerConfig, Endpoint, EndpointStats
from microcall.policy.breaker import BreakerStateChange, CircuitBreaker, CircuitBreakerConfig
from microcall.policy.ejection import Ejection, OutlierDetector, OutlierEjectionConfig

log = logging.getLogger("microcall")


def endpoint_policies(
    balancer: BalancerConfig,
    breaker: CircuitBreakerConfig | None,
    ejection: OutlierEjectionConfig | None,
) -> tuple[BalancerConfig, CircuitBreakerConfig | None, OutlierEjectionConfig | None]:
    """The policies a client or channel gives its endpoints, checked as it is built.

    A wrong object here would fail only at the first call, or never (an
    ejection setting given as a dict would quietly leave ejection off).
    """
    instance("balancer", balancer, BalancerConfig, "a BalancerConfig")
    if breaker is not None:
        instance("breaker", breaker, CircuitBreakerConfig, "a CircuitBreakerConfig or None")
    if ejection is not None:
        instance("ejection", ejection, OutlierEjectionConfig, "an OutlierEjectionConfig or None")
    return balancer, breaker, ejection


class EndpointGroup:
    """Endpoints by address under one balancer, with their breakers and ejection."""

    __slots__ = (
        "_breaker_config",
        "_decay_time",
        "_watch",
        "balancer",
        "breaker_events",
        "ejection_events",
    )

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        balancer: BalancerConfig,
        breaker: CircuitBreakerConfig | None,
        ejection: OutlierEjectionConfig | None,
        rng: random.Random | None = None,
        watch_loop: bool = False,
    ) -> None:
        self.breaker_events: list[Callable[[BreakerStateChange], None]] = [_log_breaker]
        self.ejection_events: list[Callable[[Ejection], None]] = [_log_ejection]
        self._breaker_config = breaker
        self._decay_time = balancer.decay_time
        outliers = (
            None
            if ejection is None
            else OutlierDetector(list(addresses), ejection, listeners=self.ejection_events)
        )
        self.balancer = Balancer(
            addresses, balancer, rng=rng, outliers=outliers, new_endpoint=self._new_endpoint
        )
        self._watch = LoopWatch(self._busy) if watch_loop else None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.balancer.endpoints

    def _new_endpoint(self, address: str) -> Endpoint:
        breaker = (
            None
            if self._breaker_config is None
            else CircuitBreaker(address, self._breaker_config, listeners=self.breaker_events)
        )
        return Endpoint(address, EndpointStats(self._decay_time), breaker)

    def pick(self, now: float, exclude: Sequence[Endpoint]) -> Endpoint:
        return self.balancer.pick(now, exclude)

    def started(self, endpoint: Endpoint, now: float) -> None:
        """An attempt was sent to ``endpoint``."""
        endpoint.stats.start(now)
        if self._watch is not None:
            self._watch.started(now)

    def finished(self, endpoint: Endpoint, latency: float, success: bool, now: float) -> None:
        """An attempt on ``endpoint`` ended with an outcome."""
        endpoint.stats.finish(self._own_latency(latency, now), success, now)
        if endpoint.breaker is not None:
            endpoint.breaker.record(success, now)
        outliers = self.balancer.outliers
        if outliers is not None:
            outliers.record(endpoint.address, success, now)

    def abandoned(self, endpoint: Endpoint, latency: float, now: float) -> None:
        """An attempt on ``endpoint`` was cancelled before its outcome arrived."""
        endpoint.stats.abandon(self._own_latency(latency, now), now)
        if endpoint.breaker is not None:
            endpoint.breaker.release(now)

    def stop_watching(self) -> None:
        """Cancel the loop watch's timer (the owner is closing)."""
        if self._watch is not None:
            self._watch.close()

    def _own_latency(self, latency: float, now: float) -> float:
        watch = self._watch
        return latency if watch is None else watch.own_latency(latency, now)

    def _busy(self) -> bool:
        return any(endpoint.stats.outstanding for endpoint in self.balancer.endpoints)


# Rate-limited per endpoint (an outage must not flood the log) and named
# host:port only: a base URL may carry user-info.
def _log_breaker(event: BreakerStateChange) -> None:
    endpoint = safe_endpoint(event.endpoint)
    log_event(
        log,
        logging.WARNING,
        ("breaker_state", endpoint),
        "circuit breaker for %s: %s -> %s",
        endpoint,
        event.old,
        event.new,
        extra={"microcall_event": "breaker_state", "endpoint": endpoint, "state": event.new},
    )


def _log_ejection(event: Ejection) -> None:
    endpoint = safe_endpoint(event.endpoint)
    log_event(
        log,
        logging.WARNING,
        ("ejection", endpoint),
        "ejected %s for %.0f s after consecutive failures (ejection #%d)",
        endpoint,
        event.until - event.at,
        event.count,
        extra={"microcall_event": "ejection", "endpoint": endpoint},
    )
