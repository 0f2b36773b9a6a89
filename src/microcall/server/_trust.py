"""Whom a server believes when a caller asks for high priority.

Priority is a claim the caller makes about itself. Believed blindly, it is a
way around load shedding: any client that sends ``X-Request-Priority: high``
would be served while everyone else is refused. So by default a server
accepts ``low`` and ``normal`` from anyone (asking for less is always
harmless) and caps a ``high`` claim at ``normal`` unless the operator's
predicate says the caller may make it.

A predicate sees a :class:`Caller`: the peer address and the request's
headers, whatever the framework. It runs only when a caller claims ``high``,
so it costs nothing on ordinary traffic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from microcall.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request, as a trust predicate sees it.

    ``address`` is the peer's IP address as the server saw it (None when the
    server does not say, e.g. a Unix socket). ``header(name)`` reads a request
    header, case-insensitively (None when absent). ``request`` is the
    framework's own object: an aiohttp ``web.Request``, an ASGI scope, or a
    WSGI environ.
    """

    address: str | None
    header: Callable[[str], str | None]
    request: object


TrustPredicate = Callable[[Caller], bool]
"""``trust(caller) -> bool``: may this caller ask for high priority?"""


def trust_all(caller: Caller) -> bool:
    """Believe every caller: for a service reachable only from trusted ones."""
    return True


def trust_networks(*networks: str) -> TrustPredicate:
    """Believe callers whose address is in one of ``networks`` (CIDR, e.g. ``"10.0.0.0/8"``).

    Only meaningful when the server sees the real peer address: behind a proxy
    every caller is the proxy, so trust a header the proxy sets instead.
    """
    if not networks:
        raise ConfigurationError("trust_networks needs at least one network")
    try:
        parsed = tuple(ipaddress.ip_network(network, strict=False) for network in networks)
    except ValueError as exc:
        raise ConfigurationError(f"trust_networks: {exc}") from None

    def trusted(caller: Caller) -> bool:
        if caller.address is None:
            return False
        try:
            address = ipaddress.ip_address(caller.address)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # "::ffff:10.1.2.3" on a dual-stack socket
        return any(address in network for network in parsed)

    return trusted


def trust_header(name: str, value: str) -> TrustPredicate:
    """Believe callers whose request carries header ``name`` equal to ``value``.

    For a mesh or an edge proxy that strips the header from outside traffic
    and sets it on internal calls; never for a header clients can set freely.
    """
    if not name or not value:
        raise ConfigurationError("trust_header needs a header name and a value")

    def trusted(caller: Caller) -> bool:
        return caller.header(name) == value

    return trusted
