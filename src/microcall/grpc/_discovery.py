"""DNS discovery for an AsyncChannel: one target per address of a name, re-resolved periodically.

::

    channel = AsyncChannel(TargetDiscovery(target="recommendations:50051", every=10.0), options)

A Kubernetes headless Service answers its name with one address per ready
pod. grpc's own ``dns:///`` resolver can spread calls over them inside one
channel, but then microcall sees one target: no latency-aware picking,
breaker or ejection per pod, and a hedge may land on the pod it backs up.
Here each address is a target of its own (its own grpc channel), and the
name is looked up again every ``every`` seconds on the channel's event loop,
so pods added or replaced later are found (see :mod:`._targets` for how the
group changes under calls in flight).

Calls keep the name: each address's channel sends it as the ``:authority``
and, under TLS, checks the server's certificate against it. Whether a
target gets TLS is decided on the name, as for a fixed target: an answer of
127.0.0.1 does not turn TLS off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc.aio

from microcall._durations import to_seconds
from microcall._replicas import DEFAULT_RESOLVE_EVERY, resolve_addresses
from microcall.errors import ConfigurationError
from microcall.grpc._targets import Targets
from microcall.observe.logs import log_event

log = logging.getLogger("microcall")

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``await resolver(host, port)``: the addresses of ``host`` (raises OSError when it cannot tell)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetDiscovery:
    """The replicas of a gRPC service: the addresses ``target``'s name resolves to.

    target    ``"name:port"``, as a fixed target would be written (no resolver
              prefix such as ``dns:///``: the name is resolved here)
    every     seconds between lookups (default 10)
    resolver  ``await resolver(host, port) -> addresses``; default: the
              system's resolver (``getaddrinfo`` on the event loop). A test or
              a custom registry passes its own; raising OSError means the
              lookup failed and the current targets are kept.

    Only :class:`~microcall.grpc.AsyncChannel` takes one: the lookups run on
    its event loop.
    """

    target: str
    every: float = DEFAULT_RESOLVE_EVERY
    resolver: Resolver | None = None

    def __post_init__(self) -> None:
        host, port = _split(self.target)
        if not host or port is None:
            raise ConfigurationError(
                f"discovery needs a target like 'recommendations:50051', got {self.target!r}"
            )
        object.__setattr__(self, "every", to_seconds(self.every, name="discovery interval"))
        if self.resolver is not None and not callable(self.resolver):
            raise ConfigurationError(f"resolver must be an async function, got {self.resolver!r}")

    @property
    def host(self) -> str:
        """The name looked up."""
        return _split(self.target)[0]

    @property
    def port(self) -> int:
        """The port every address is called on."""
        port = _split(self.target)[1]
        assert port is not None
        return port


def address_target(address: str, port: int) -> str:
    """``10.0.0.7:50051`` or ``[fd00::7]:50051``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def authority_options(
    discovery: TargetDiscovery, secure: bool, given: Sequence[tuple[str, object]]
) -> tuple[tuple[str, object], ...]:
    """grpc channel arguments that keep the name on a channel to one of its addresses.

    The caller's own ``grpc_options`` win: an argument they set is not added.
    """
    ours: list[tuple[str, object]] = [("grpc.default_authority", discovery.target)]
    if secure:
        ours.append(("grpc.ssl_target_name_override", discovery.host))
    named = {key for key, _ in given}
    return tuple(given) + tuple(pair for pair in ours if pair[0] not in named)


class TargetRefresher:
    """Keeps one channel's targets equal to what its name resolves to, on the channel's loop.

    The first call on an event loop waits for the first lookup (``ready``);
    then a task on that loop looks again every ``every`` seconds. A second
    event loop (a second ``asyncio.run``) starts its own task: the first
    loop's ended with that loop.
    """

    __slots__ = ("_failing", "_first", "_now", "_task", "discovery", "targets")

    def __init__(
        self,
        discovery: TargetDiscovery,
        targets: Targets[grpc.aio.Channel],
        now: Callable[[], float],
    ) -> None:
        self.discovery = discovery
        self.targets = targets
        self._now = now
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._failing = False  # the lookups fail: said once, until one succeeds

    def kick(self) -> None:
        """Start the lookups on the running loop, unless they already run there."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and task.get_loop() is loop:
            return
        self._first = loop.create_future()
        self._task = loop.create_task(self._run(self._first))

    async def ready(self) -> None:
        """Return once the name has been looked up on this loop (the group kept if it failed)."""
        first = self._first
        task = self._task
        if (
            first is not None
            and first.done()
            and task is not None
            and task.get_loop() is asyncio.get_running_loop()
        ):
            return
        self.kick()
        assert self._first is not None
        # Shielded: a call cancelled while waiting leaves the lookup to the others.
        await asyncio.shield(self._first)

    async def _run(self, first: asyncio.Future[None]) -> None:
        try:
            await self.refresh()
        finally:
            if not first.done():
                first.set_result(None)
        while True:
            await asyncio.sleep(self.discovery.every)
            await self.refresh()

    async def refresh(self) -> None:
        """Look the name up now and update the targets (kept as they are if it fails)."""
        discovery = self.discovery
        resolver = discovery.resolver or resolve_addresses
        try:
            addresses = list(await resolver(discovery.host, discovery.port))
        except Exception as error:  # any failure of the lookup: keep serving the targets known
            self._failed(error)
            addresses = []
        targets = [address_target(address, discovery.port) for address in addresses]
        try:
            idle = self.targets.update(targets, self._now())
        except Exception as error:  # a channel_factory that failed: the next lookup tries again
            self._failed(error)
            return
        if addresses:
            self._failing = False
        await _close(idle)

    def _failed(self, error: Exception) -> None:
        # One line per outage, not one per lookup (and rate-limited per name
        # across outages): a DNS server down for an hour is one event.
        if not self._failing:
            self._failing = True
            _log_failure(self.discovery, len(self.targets.endpoints), error)

    async def aclose(self) -> None:
        """Stop looking up (the channel is closing)."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _close(channels: Sequence[grpc.aio.Channel]) -> None:
    if channels:
        await asyncio.gather(*(channel.close(None) for channel in channels))


def _log_failure(discovery: TargetDiscovery, kept: int, error: BaseException) -> None:
    # Rate-limited per name: a DNS outage must not write a line every few seconds.
    log_event(
        log,
        logging.WARNING,
        ("discovery_failed", discovery.target),
        "resolving %s failed; keeping %d targets",
        discovery.host,
        kept,
        extra={"microcall_event": "discovery_failed", "error": str(error)},
    )


def _split(target: object) -> tuple[str, int | None]:
    """``(host, port)`` of ``name:port`` or ``[v6]:port``; port None when missing or bad."""
    if not isinstance(target, str) or "/" in target:
        return "", None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":")
        if ":" in host:  # a bare IPv6 address with no port
            return "", None
    try:
        port = int(port_text)
    except ValueError:
        return host, None
    if not 0 < port < 65536:
        return host, None
    return host, port
