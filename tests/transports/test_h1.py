"""microcall's own HTTP/1.1 transport, on what the shared suites do not reach: TLS, limits, closes.

The shared suites (tests/faults/ matrix and soak, tests/transports/
test_limits_redirects.py, test_loops.py, test_keepalive.py on the default
transport) run on it too; tests/transports/test_h1_wire.py tests its parser.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl

import pytest
import trustme
from aiohttp import web
from yarl import URL

import microcall
from microcall._request import Request
from microcall.transports._default import default_transport
from microcall.transports.h1 import H1Transport
from tests.conftest import Serve
from tests.transports.test_httpx import EchoApp, TLSServe
from tests.transports.test_httpx import ca as ca  # the `ca` fixture
from tests.transports.test_httpx import tls_serve as tls_serve  # the `tls_serve` fixture
from tests.transports.test_httpx import trusting as trusting  # the `trusting` fixture


def test_it_is_the_default_where_httptools_is_installed() -> None:
    chosen = default_transport(limits=None, verify=True, follow_redirects=True)
    assert isinstance(chosen, H1Transport)


class HoldingServer:
    """A raw server that reads a request and never answers; it notes when the client closes."""

    def __init__(self) -> None:
        self.requests = 0
        self.closed = 0
        self.open = 0
        self.most_open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if await reader.read() == b"":
                self.closed += 1
        finally:
            self.open -= 1
            writer.close()


async def test_a_losing_hedge_closes_its_connection_and_the_server_sees_it() -> None:
    holding = HoldingServer()
    server = await asyncio.start_server(holding.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with microcall.AsyncClient(
            f"http://127.0.0.1:{port}", transport=H1Transport(), timeout=0.3
        ) as client:
            with pytest.raises(microcall.DeadlineExceeded):
                await client.get("/", strategy=microcall.hedged(0.05))
            for _ in range(100):
                if holding.closed == holding.requests == 2:
                    break
                await asyncio.sleep(0.01)
        assert holding.closed == holding.requests == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_connections_per_host_are_bounded() -> None:
    holding = HoldingServer()
    server = await asyncio.start_server(holding.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = H1Transport(limits=microcall.Limits(max_connections_per_host=2))
    try:
        async with microcall.AsyncClient(
            f"http://127.0.0.1:{port}", transport=transport, timeout=0.3
        ) as client:
            outcomes = await asyncio.gather(
                *(client.get("/") for _ in range(5)), return_exceptions=True
            )
        assert all(isinstance(one, microcall.DeadlineExceeded) for one in outcomes)
        assert holding.most_open == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_head_gzip_and_redirects(serve: Serve) -> None:
    async def zipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"z" * 1000), headers={"Content-Encoding": "gzip"})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/zipped")

    app = web.Application()
    app.router.add_get("/zipped", zipped)
    app.router.add_post("/moved", moved)
    url = await serve(app)
    async with microcall.AsyncClient(url, transport=H1Transport()) as client:
        assert (await client.get("/zipped")).content == b"z" * 1000
        head = await client.head("/zipped")
        assert head.status_code == 200
        assert head.content == b""
        redirected = await client.post("/moved", content=b"x")
        assert redirected.content == b"z" * 1000
        assert redirected.url.path == "/zipped"
        assert (await client.get("/zipped")).status_code == 200  # the pool still serves


async def test_tls_is_verified_by_default(tls_serve: TLSServe) -> None:
    base = await tls_serve(EchoApp())
    async with microcall.AsyncClient(base, transport=H1Transport(), timeout=5.0) as client:
        with pytest.raises(microcall.ConnectError, match="certificate"):
            await client.get("/echo")


async def test_tls_with_a_trusted_context_keeps_its_connection(
    tls_serve: TLSServe, trusting: ssl.SSLContext
) -> None:
    base = await tls_serve(EchoApp())
    transport = H1Transport(verify=trusting)
    async with microcall.AsyncClient(base, transport=transport, timeout=5.0) as client:
        first = (await client.get("/echo")).json()
        second = (await client.get("/echo")).json()
    assert first["http_version"] == "1.1"
    assert first["client_port"] == second["client_port"]


async def test_a_replica_by_address_keeps_the_name_in_host_and_tls(
    tls_serve: TLSServe, trusting: ssl.SSLContext, ca: trustme.CA
) -> None:
    base = await tls_serve(EchoApp(), names=["catalog.test"])
    port = URL(base).port
    request = Request("GET", URL(f"https://catalog.test:{port}/echo"), {})
    replica = URL(f"https://127.0.0.1:{port}/echo")
    by_name, by_address = H1Transport(verify=trusting), H1Transport(verify=trusting)
    try:
        response = await by_name.send(request, replica, {}, 5.0)
        with pytest.raises(microcall.ConnectError):
            await by_address.send(Request("GET", replica, {}), replica, {}, 5.0)
    finally:
        await by_name.aclose()
        await by_address.aclose()
    assert response.json()["host"] == f"catalog.test:{port}"
    assert response.url == replica


async def test_a_closed_transport_refuses_to_send(serve: Serve) -> None:
    transport = H1Transport()
    await transport.aclose()
    request = Request("GET", URL("http://127.0.0.1:9/"), {})
    with pytest.raises(microcall.UsageError):
        await transport.send(request, request.url, {}, 1.0)
