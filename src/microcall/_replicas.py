"""A client's replicas: where each attempt goes, and what each endpoint's record says.

A client has one group of endpoints: the base URLs it was given, or the
addresses a DNS name resolves to (re-resolved periodically, one per pod of a
Kubernetes headless service). Calls to a path relative to the client's base
are spread over the group by the balancer; a call to an absolute URL goes
where it says and is not balanced.

The endpoint records, balancing, breakers and ejection are the shared
:class:`~microcall._group.EndpointGroup`'s; this adds the base URLs and
discovery. The engine reports every attempt here; the policies decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yarl import URL

from microcall._checks import absolute_url
from microcall._durations import to_seconds
from microcall._group import EndpointGroup
from microcall.policy.balancer import BalancerConfig, Endpoint
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.ejection import OutlierEjectionConfig

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
        absolute_url("discovery's url", self.url)
        object.__setattr__(self, "every", to_seconds(self.every, name="discovery interval"))


class Replicas(EndpointGroup):
    """The endpoint group of one client: balancing, breakers, ejection, discovery.

    ``watch_loop``: the client's calls are timed on the real clock, so its
    event loop is watched for the client's own stalls (see
    :mod:`microcall._group`).
    """

    __slots__ = ("_bases", "_first", "_refresher", "discovery")

    def __init__(
        self,
        bases: Sequence[URL],
        *,
        balancer: BalancerConfig,
        breaker: CircuitBreakerConfig | None,
        ejection: OutlierEjectionConfig | None,
        discovery: Discovery | None = None,
        rng: random.Random | None = None,
        watch_loop: bool = False,
    ) -> None:
        self.discovery = discovery
        self._bases = {str(base): base for base in bases}
        super().__init__(
            list(self._bases),
            balancer=balancer,
            breaker=breaker,
            ejection=ejection,
            rng=rng,
            watch_loop=watch_loop,
        )
        self._refresher: asyncio.Task[None] | None = None
        # The first lookup on the current loop: every call waits for it.
        self._first: asyncio.Task[None] | None = None

    @property
    def single(self) -> bool:
        """One endpoint and nothing to decide: the engine may skip balancing."""
        return (
            len(self.balancer.endpoints) == 1
            and self._breaker_config is None
            and self.discovery is None
        )

    def base_of(self, endpoint: Endpoint) -> URL:
        return self._bases[endpoint.address]

    # ------------------------------------------------------------ discovery

    async def discover(self, now: Callable[[], float]) -> None:
        """Resolve the name on first use, then keep re-resolving in the background.

        Calls that arrive while the first lookup runs wait for it too, so
        none goes out to the unresolved name.
        """
        first = self._first
        loop = asyncio.get_running_loop()
        if first is None or first.get_loop() is not loop:
            # First use, or a new loop (a second asyncio.run): the old loop's
            # refresher was cancelled as that loop ended.
            first = self._first = loop.create_task(self.resolve(now()))
            self._refresher = loop.create_task(self._rediscover(now))
        if not first.done():
            # Shielded: one caller giving up does not stop the lookup the others wait for.
            await asyncio.shield(first)

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
        self.stop_watching()
        if self._first is not None and not self._first.done():
            self._first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._first
        self._first = None
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
    seen: dict[str, URL] = {}
    for address in await resolve_addresses(parsed.host, port):
        base = parsed.with_host(address).with_port(port)
        seen.setdefault(str(base), base)
    return sorted(seen.values(), key=str)


async def resolve_addresses(host: str, port: int | None) -> list[str]:
    """The addresses ``host`` resolves to for a TCP connection, each once, sorted.

    Bare addresses (``10.0.0.7``, ``fd00::7``): the caller adds the port and
    the brackets its own syntax needs. Raises OSError when the lookup fails.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({str(sockaddr[0]) for _, _, _, _, sockaddr in infos})
