"""The HTTP/1.1 transport's way through a forward proxy: a connection to it, or a CONNECT tunnel.

Theory of operation. A plain ``http://`` request through a proxy is an
ordinary keep-alive connection to the proxy, carrying requests whose target
is the absolute URL (``GET http://catalog:8080/books HTTP/1.1``) and whose
``Proxy-Authorization`` the transport adds. An ``https://`` request asks the
proxy for a tunnel first::

    CONNECT catalog:8443 HTTP/1.1
    Host: catalog:8443
    Proxy-Authorization: Basic ...        (when the proxy URL has user-info)

and, once the proxy answers 2xx, the transport starts TLS to the target over
the same socket (``loop.start_tls``): the proxy sees only encrypted bytes,
the certificate is checked against the target's name. The reply to CONNECT
is read here, head only (a 2xx reply to CONNECT has no body, RFC 9110
9.3.6), without llhttp, which would wait for a body that never comes.

Either way the pool keys the connection by proxy and target
(``Origin.proxy``), so a tunnel is reused only for its own target, and the
stale-connection resend and the caps work as for a direct connection.
Failures to reach the proxy, and a refused tunnel, raise ``ProxyFailed``;
``h1.map_error`` makes it a ``ProxyError`` naming the proxy without its
credentials.
"""

from __future__ import annotations

import asyncio

from microcall.transports._h1_conn import H1Connection, Origin
from microcall.transports._h1_wire import MAX_HEAD
from microcall.transports._proxy import Proxy, ProxyFailed


def absolute_target(scheme: str, authority: str, path_qs: str) -> str:
    """The request target a proxy is sent for a plain-HTTP request (RFC 9112 3.2.2): the URL.

    Never with user-info: it is not sent, to a proxy or to anyone.
    """
    return f"{scheme}://{authority}{path_qs}"


async def connect_plain(key: Origin, proxy: Proxy) -> H1Connection:
    """A keep-alive connection to the proxy, for plain-HTTP requests to ``key``'s target."""
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(
            lambda: H1Connection(key, loop), proxy.host, proxy.port
        )
    except OSError as error:  # refused, unreachable, DNS
        raise ProxyFailed(proxy, f"cannot be reached: {error}") from error
    return conn


async def open_tunnel(key: Origin, proxy: Proxy) -> asyncio.Transport:
    """A socket through the proxy to ``key``'s target, ready for TLS; the caller starts it.

    Cancellation (the attempt's deadline, a losing hedge) closes the socket.
    """
    loop = asyncio.get_running_loop()
    try:
        transport, reply = await loop.create_connection(
            lambda: TunnelReply(proxy), proxy.host, proxy.port
        )
    except OSError as error:
        raise ProxyFailed(proxy, f"cannot be reached: {error}") from error
    try:
        authority = f"[{key.host}]:{key.port}" if ":" in key.host else f"{key.host}:{key.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, reason, rest = await reply.answer
        if not 200 <= status < 300:
            raise ProxyFailed(proxy, status=status, reason=reason)
        if rest:
            # TLS has not started: whatever came is not the target's and would be lost.
            raise ProxyFailed(proxy, "sent bytes after its answer to CONNECT")
    except BaseException:
        transport.close()
        raise
    return transport


class TunnelReply(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: the status line and headers, nothing more."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self._buffer = bytearray()
        self.answer: asyncio.Future[tuple[int, str, bytes]] = (
            asyncio.get_running_loop().create_future()
        )

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            self._buffer += data  # after the head: kept, and refused by open_tunnel
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._fail(f"answered CONNECT with a head over {MAX_HEAD} bytes")
            return
        head, rest = bytes(self._buffer[:end]), bytes(self._buffer[end + 4 :])
        self._buffer.clear()
        parsed = _status_line(head.split(b"\r\n", 1)[0])
        if parsed is None:
            self._fail("answered CONNECT with something that is not HTTP")
            return
        self.answer.set_result((*parsed, rest))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"closed the connection before answering CONNECT{f': {exc}' if exc else ''}")

    def _fail(self, what: str) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyFailed(self._proxy, what))


def _status_line(line: bytes) -> tuple[int, str] | None:
    """``(status, reason)`` of ``HTTP/1.x NNN reason``, or None if it is not one."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        return None
    if not parts[1].isdigit():
        return None
    reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
    return int(parts[1]), reason
