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

The targets may change (DNS discovery, :mod:`._discovery`): each target
keeps the *slot* it was given when it joined, the index of its channel and
of its multi-callable in every method's table, so an attempt that picked a
target reaches the same channel however the group changes meanwhile. A
target that leaves is out of the balancer at once; its channel is handed
back for closing once no attempt on it is outstanding.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from microcall._group import EndpointGroup
from microcall.errors import ConfigurationError
from microcall.policy.balancer import BalancerConfig, Endpoint
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.ejection import OutlierEjectionConfig

C = TypeVar("C")


class Refresher(Protocol):
    """What keeps a changing group current (see :mod:`._discovery`)."""

    def kick(self) -> None:
        """Start refreshing on the running event loop if not already."""

    async def ready(self) -> None:
        """Return once the group has been resolved at least once on this loop."""


class CallableTable(list[Any]):
    """One method's grpc multi-callable per slot (None for a slot whose channel is closed)."""

    __slots__ = ("__weakref__", "make")

    def __init__(self, make: Callable[[Any], Any], channels: Sequence[Any]) -> None:
        super().__init__(None if channel is None else make(channel) for channel in channels)
        self.make = make


class Targets(EndpointGroup, Generic[C]):
    """The targets of one channel wrapper and the grpc channel of each.

    ``watch_loop``: the channel's attempts all run on one event loop (an
    ``AsyncChannel``'s) and its times are the real monotonic clock, so the
    group may watch that loop for the client's own stalls (see
    :mod:`microcall._group`). A blocking ``Channel``'s attempts run on its
    callers' threads: nothing to watch.

    ``authority``: the name the targets stand for (a discovered group's DNS
    name), else the first target. ``changing``: the group is replaced by
    :meth:`update` over time, so it is never treated as a fixed single target.
    """

    __slots__ = (
        "_addresses",
        "_by_address",
        "_channel_for",
        "_channels",
        "_retiring",
        "_tables",
        "authority",
        "refresher",
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
        watch_loop: bool = False,
        changing: bool = False,
        authority: str | None = None,
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
            ejection=ejection if len(addresses) > 1 or changing else None,
            rng=rng,
            watch_loop=watch_loop,
        )
        self._channel_for = channel_for
        self._addresses: list[str] = []  # by slot
        self._channels: list[C | None] = []  # by slot; None once closed
        self._by_address: dict[str, int] = {}  # the current targets' slots
        self._retiring: dict[str, tuple[int, Endpoint]] = {}  # left, channel still open
        self._tables: list[weakref.ref[CallableTable]] = []
        for address in addresses:
            self._by_address[address] = self._add(address)
        self.authority = authority or addresses[0]
        self.refresher: Refresher | None = None
        # One target and nothing to decide: attempts skip balancing altogether.
        self.single = len(addresses) == 1 and breaker is None and not changing

    @property
    def channels(self) -> list[C]:
        """Every open grpc channel: the targets', then those of targets leaving."""
        return [channel for channel in self._channels if channel is not None]

    @property
    def current(self) -> list[C]:
        """The grpc channel of each current target, in the balancer's order."""
        channels = self._channels
        return [channels[self._by_address[e.address]] for e in self.endpoints]  # type: ignore[misc]  # a current target's channel is open

    def slot_of(self, endpoint: Endpoint) -> int:
        """The slot of ``endpoint``'s target: its channel's index in every table."""
        return self._by_address[endpoint.address]

    def address_at(self, slot: int) -> str:
        """The target of ``slot``."""
        return self._addresses[slot]

    def callables(self, make: Callable[[C], Any]) -> CallableTable:
        """One method's multi-callable per slot, kept complete as targets join and leave."""
        table = CallableTable(make, self._channels)
        self._tables = [ref for ref in self._tables if ref() is not None]
        self._tables.append(weakref.ref(table))
        return table

    def pick(self, now: float, exclude: Sequence[Endpoint]) -> Endpoint:
        refresher = self.refresher
        if refresher is not None:
            # A call that could not wait for the first lookup (a stream starts
            # synchronously) still sets the refreshing going.
            refresher.kick()
        return self.balancer.pick(now, exclude)

    # ------------------------------------------------------------ changes

    def update(self, targets: Sequence[str], now: float) -> list[C]:
        """Make ``targets`` the group (an empty list changes nothing).

        Targets that stay keep their slot, channel, breaker and latency
        record; new ones get a channel; those that leave stop being picked at
        once. Returns the channels now safe to close (see :meth:`idle`).
        """
        wanted = list(dict.fromkeys(targets))
        if not wanted:
            return self.idle()
        leaving = {e.address: e for e in self.endpoints if e.address not in wanted}
        for address in wanted:
            if address in self._by_address:
                continue
            back = self._retiring.pop(address, None)
            self._by_address[address] = self._add(address) if back is None else back[0]
        self.balancer.update(wanted, now)
        for address, endpoint in leaving.items():
            self._retiring[address] = (self._by_address.pop(address), endpoint)
        return self.idle()

    def idle(self) -> list[C]:
        """Forget the channels of targets that left and have no attempt outstanding; return them."""
        closing: list[C] = []
        for address, (slot, endpoint) in list(self._retiring.items()):
            if endpoint.stats.outstanding:
                continue
            del self._retiring[address]
            channel = self._channels[slot]
            self._channels[slot] = None
            for table in self._live_tables():
                table[slot] = None
            if channel is not None:
                closing.append(channel)
        return closing

    def _add(self, address: str) -> int:
        channel = self._channel_for(address)
        self._addresses.append(address)
        self._channels.append(channel)
        for table in self._live_tables():
            table.append(table.make(channel))
        return len(self._channels) - 1

    def _live_tables(self) -> list[CallableTable]:
        return [table for table in (ref() for ref in self._tables) if table is not None]
