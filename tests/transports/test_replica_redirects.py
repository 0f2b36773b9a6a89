"""A replica reached by address keeps its service's name (Host, TLS server name) to its own origin.

Server A has a certificate for ``localhost`` only and is reached through
``Discovery("https://localhost:PORT")``: the replica is ``127.0.0.1:PORT``,
named ``localhost``. A redirect to a path of its own must keep that name
(without it the hop fails TLS, and loses the caller's credentials); a
redirect to another origin (server B, certificate for ``localhost`` only,
named by address) must be checked against that origin's own name, and an
error there names B, not A.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trustme

import microcall
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport

TRANSPORTS: dict[str, Callable[..., Any]] = {
    "h1": H1Transport,
    "aiohttp": AiohttpTransport,
    "httpx": lambda **options: HttpxTransport(http2=False, **options),
}


@dataclass
class Seen:
    """What the servers saw: (server, path, Host, Authorization) and the TLS server names."""

    requests: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    names: list[tuple[str, str | None]] = field(default_factory=list)


def _protocol(tag: str, routes: dict[str, str], seen: Seen) -> type[asyncio.Protocol]:
    class Answering(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                line, *fields = head.decode("latin-1").split("\r\n")
                path = line.split(" ")[1]
                named = dict(f.split(":", 1) for f in fields)
                headers = {key.strip().lower(): value.strip() for key, value in named.items()}
                seen.requests.append((tag, path, headers["host"], headers.get("authorization")))
                location = routes.get(path)
                answer = (
                    f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n"
                    if location
                    else "HTTP/1.1 200 OK\r\n"
                )
                self.transport.write(f"{answer}Content-Length: 0\r\n\r\n".encode())

    return Answering


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int, Seen, ssl.SSLContext]]:
    """Servers A and B (certificates for ``localhost`` only); A redirects ``/rel`` and ``/abs``."""
    ca = trustme.CA()
    seen = Seen()
    loop = asyncio.get_running_loop()
    started = []
    routes: dict[str, str] = {}
    for tag in ("A", "B"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(context)
        context.sni_callback = lambda _s, name, _c, tag=tag: seen.names.append((tag, name))  # type: ignore[misc]
        server = await loop.create_server(
            lambda tag=tag: _protocol(tag, routes if tag == "A" else {}, seen)(),  # type: ignore[misc]
            "127.0.0.1",
            0,
            ssl=context,
        )
        started.append(server)
    port_a, port_b = (server.sockets[0].getsockname()[1] for server in started)
    routes["/rel"] = "/final"
    routes["/abs"] = f"https://127.0.0.1:{port_b}/final"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    # A server-side handshake the client gave up on is no failure of the test.
    loop.set_exception_handler(lambda _loop, _context: None)
    try:
        yield port_a, port_b, seen, trusting
    finally:
        loop.set_exception_handler(None)
        for server in started:
            server.close()


def client_of(
    port: int, transport: str, trusting: ssl.SSLContext, **options: Any
) -> microcall.AsyncClient:
    """A client of server A by its name, whose replica the balancer reaches by address."""
    return microcall.AsyncClient(
        microcall.Discovery(url=f"https://localhost:{port}"),
        transport=TRANSPORTS[transport](verify=trusting),
        timeout=5.0,
        **options,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_same_origin_redirect_keeps_the_name_and_the_credentials(
    servers: tuple[int, int, Seen, ssl.SSLContext], transport: str
) -> None:
    port_a, _, seen, trusting = servers
    async with client_of(port_a, transport, trusting, auth=("svc", "pw")) as client:
        response = await client.get("/rel")
    assert response.status_code == 200
    assert [(tag, path, host) for tag, path, host, _ in seen.requests] == [
        ("A", "/rel", f"localhost:{port_a}"),
        ("A", "/final", f"localhost:{port_a}"),
    ]
    assert all(auth is not None for *_, auth in seen.requests)
    assert {name for _, name in seen.names} == {"localhost"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_redirect_to_another_origin_is_checked_against_its_own_name(
    servers: tuple[int, int, Seen, ssl.SSLContext], transport: str
) -> None:
    port_a, port_b, seen, trusting = servers
    async with client_of(port_a, transport, trusting) as client:
        with pytest.raises(microcall.ConnectError) as refused:
            await client.get("/abs")
    # B's certificate names localhost, and B was named 127.0.0.1: refused,
    # and the error names B, where it failed.
    assert str(refused.value).startswith(f"cannot connect to 127.0.0.1:{port_b}:")
    assert ("B", "localhost") not in seen.names
    assert [tag for tag, *_ in seen.requests] == ["A"]


async def test_httpx_keeps_the_name_on_a_replica_at_its_default_port() -> None:
    """httpx names no port for 443: the replica's origin is read as httpx reads the hops'."""
    from microcall.transports.httpx import REPLICA, _origin_of, each_hop

    first = httpx.Request("GET", "https://127.0.0.1/x", extensions={"sni_hostname": "svc"})
    first.extensions[REPLICA] = _origin_of(first.url)
    await each_hop(first)
    assert first.extensions["sni_hostname"] == "svc"
    elsewhere = httpx.Request("GET", "https://10.0.0.9/y", extensions=dict(first.extensions))
    await each_hop(elsewhere)
    assert "sni_hostname" not in elsewhere.extensions
