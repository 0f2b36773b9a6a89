"""A client's replicas: where each attempt goes, and what each endpoint's record says.

A client has one group of endpoints: the base URLs it was given, or the
addresses a DNS name resolves to (re-resolved periodically, one per pod of a
Kubernetes headless service). Calls to a path relative to the client's base
are spread over the group by the balancer; a call to an absolute URL goes
where it says and is not balanced.

Per endpoint: peak-EWMA latency and outstanding attempts (for the balancer),
an optional circuit breaker, and a consecutive-failure record for outlier
ejection. The engine reports every attempt here; the policies decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yarl import URL

from microcall._durations import to_seconds
from microcall.errors import ConfigurationError
from microcall.observe._redact import safe_endpoint
from microcall.observe.logs import log_event
from microcall.policy.balancer import Balancer, BalancerConfig, Endpoint, EndpointStats
from microcall.policy.breaker import BreakerStateChange, CircuitBreaker, CircuitBreakerConfig
from microcall.policy.ejection import Ejection, OutlierDetector, OutlierEjectionConfig
from microcall.policy.stalls import DEFAULT_INTERVAL, Stalls

log = logging.getLogger("microcall")

# How often a DNS name is re-resolved by default: Kubernetes endpoints change
# on the scale of seconds to minutes, and a lookup is cheap.
DEFAULT_RESOLVE_EVERY = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """Find the replicas of ``url`` by resolving its host name, every ``every`` seconds.

    Each address becomes an endpoint; requests keep the name in their Host
    header (and TLS server name), so virtual hosting and certificates work.
    """

    url: str
    every: float = DEFAULT_RESOLVE_EVERY

    def __post_init__(self) -> None:
        parsed = URL(self.url)
        if not parsed.absolute or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigurationError(f"discovery needs an absolute http(s) URL, got {self.url!r}")
        object.__setattr__(self, "every", to_seconds(self.every, name="discovery interval"))


class Replicas:
    """The endpoint group of one client: balancing, breakers, ejection, discovery."""

    def __init__(
        self,
        bases: Sequence[URL],
        *,
        balancer: BalancerConfig,
        breaker: CircuitBreakerConfig | None,
        ejection: OutlierEjectionConfig | None,
        discovery: Discovery | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker_events: list[Callable[[BreakerStateChange], None]] = [_log_breaker]
        self.ejection_events: list[Callable[[Ejection], None]] = [_log_ejection]
        self._breaker_config = breaker
        self._balancer_config = balancer
        self.discovery = discovery
        self._bases = {str(base): base for base in bases}
        addresses = list(self._bases)
        outliers = (
            None
            if ejection is None
            else OutlierDetector(addresses, ejection, listeners=self.ejection_events)
        )
        self.balancer = Balancer(
            addresses, balancer, rng=rng, outliers=outliers, new_endpoint=self._new_endpoint
        )
        self._refresher: asyncio.Task[None] | None = None
        # The client's own stalls, kept out of the balancer's latencies (see
        # policy/stalls.py). Watched on the loop's real time only: an injected
        # clock (a test's) has no stalls to see.
        self.stalls = Stalls()
        self._clock = clock
        self._watching = clock is time.monotonic
        self._watch: asyncio.TimerHandle | None = None

    @property
    def single(self) -> bool:
        """One endpoint and nothing to decide: the engine may skip balancing."""
        return (
            len(self.balancer.endpoints) == 1
            and self._breaker_config is None
            and self.discovery is None
        )

    def _new_endpoint(self, address: str) -> Endpoint:
        breaker = (
            None
            if self._breaker_config is None
            else CircuitBreaker(address, self._breaker_config, listeners=self.breaker_events)
        )
        return Endpoint(address, EndpointStats(self._balancer_config.decay_time), breaker)

    def base_of(self, endpoint: Endpoint) -> URL:
        return self._bases[endpoint.address]

    def pick(self, now: float, exclude: Sequence[Endpoint]) -> Endpoint:
        return self.balancer.pick(now, exclude)

    def started(self, endpoint: Endpoint, now: float) -> None:
        """An attempt was sent to ``endpoint``."""
        endpoint.stats.start(now)
        if self._watch is None and self._watching:
            self._watch_loop(now)

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
        endpoint.stats.finish(self._own_latency(latency, now), False, now)
        if endpoint.breaker is not None:
            endpoint.breaker.release(now)

    def _own_latency(self, latency: float, now: float) -> float:
        """An attempt's latency less the client's own stalls in it: the endpoint's share."""
        return max(latency - self.stalls.within(now - latency, now), 0.0)

    def _watch_loop(self, now: float) -> None:
        """A timer every DEFAULT_INTERVAL while attempts are in flight, to see the loop stall."""
        self._watch = asyncio.get_running_loop().call_later(DEFAULT_INTERVAL, self._watched, now)

    def _watched(self, armed: float) -> None:
        now = self._clock()
        self.stalls.ran(armed, armed + DEFAULT_INTERVAL, now)
        if any(endpoint.stats.outstanding for endpoint in self.balancer.endpoints):
            self._watch_loop(now)
        else:
            self._watch = None  # idle: the next attempt starts the watch again

    # ------------------------------------------------------------ discovery

    async def discover(self, now: Callable[[], float]) -> None:
        """Resolve the name on first use, then keep re-resolving in the background."""
        if self._refresher is not None:
            return
        self._refresher = asyncio.get_running_loop().create_task(self._rediscover(now))
        await self.resolve(now())

    async def _rediscover(self, now: Callable[[], float]) -> None:
        assert self.discovery is not None
        while True:
            await asyncio.sleep(self.discovery.every)
            await self.resolve(now())

    async def resolve(self, now: float) -> None:
        """Resolve the discovery name now and update the group (kept as is on failure)."""
        assert self.discovery is not None
        try:
            bases = await resolve_bases(self.discovery.url)
        except OSError as error:
            log.warning(
                "re-resolving %s failed; keeping %d endpoints",
                URL(self.discovery.url).host,
                len(self.balancer.endpoints),
                extra={"microcall_event": "discovery_failed", "error": str(error)},
            )
            return
        if not bases:
            return
        self._bases.update((str(base), base) for base in bases)
        self.balancer.update([str(base) for base in bases], now)

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None


async def resolve_bases(url: str) -> list[URL]:
    """One base URL per address ``url``'s host resolves to (same scheme, port and path)."""
    parsed = URL(url)
    assert parsed.host is not None
    port = parsed.port
    infos = await asyncio.get_running_loop().getaddrinfo(
        parsed.host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: dict[str, URL] = {}
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        host = f"[{address}]" if family == socket.AF_INET6 else address
        base = parsed.with_host(host.strip("[]")).with_port(port)
        seen.setdefault(str(base), base)
    return sorted(seen.values(), key=str)


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
