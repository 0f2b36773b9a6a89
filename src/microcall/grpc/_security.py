"""Which credentials a target's channel gets: TLS unless the caller said otherwise.

grpcio makes the caller choose between ``insecure_channel`` and
``secure_channel``; a wrapper that quietly picked plaintext would send every
call in the clear to whatever address it was given. So a target gets TLS,
verified against the system's roots, unless

- ``ChannelOptions.credentials`` names other credentials (used as given), or
- ``ChannelOptions.insecure`` is True (a service mesh whose sidecar does the
  TLS, a test network), or
- the target is on this machine: a loopback address, ``localhost`` or a
  Unix socket, where nothing crosses a network.
"""

from __future__ import annotations

import ipaddress

import grpc

_LOCAL_SCHEMES = ("unix:", "unix-abstract:")
# gRPC name-resolver prefixes that may precede host:port.
_RESOLVER_PREFIXES = ("dns:///", "dns:", "ipv4:", "ipv6:")


def channel_credentials(
    target: str, credentials: grpc.ChannelCredentials | None, insecure: bool
) -> grpc.ChannelCredentials | None:
    """The credentials for ``target``'s channel; None means plaintext."""
    if credentials is not None:
        return credentials
    if insecure or is_local(target):
        return None
    return grpc.ssl_channel_credentials()


def is_local(target: str) -> bool:
    """True for a target that never leaves this machine (loopback or a Unix socket)."""
    if target.startswith(_LOCAL_SCHEMES):
        return True
    for prefix in _RESOLVER_PREFIXES:
        if target.startswith(prefix):
            target = target[len(prefix) :]
            break
    host = _host_of(target)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only "localhost" is known to be local
        return False


def _host_of(target: str) -> str:
    if target.startswith("["):  # [::1]:50051
        return target[1:].partition("]")[0]
    if target.count(":") > 1:  # a bare IPv6 address
        return target
    return target.partition(":")[0]
