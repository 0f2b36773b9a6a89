"""The response size cap and redirects that cannot be followed, on both transports, against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp import web

import microcall
from microcall import Limits, RedirectError, ResponseTooLarge
from microcall.errors import ConfigurationError
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from tests.conftest import Serve
from tests.transports._keepalive_servers import Behaviour, KeepAliveServer

CAP = 100_000

TRANSPORTS: dict[str, Callable[[Limits], object]] = {
    "aiohttp": lambda limits: AiohttpTransport(limits=limits),
    "h1": lambda limits: H1Transport(limits=limits),
}
try:
    from microcall.transports.httpx import HttpxTransport
except ImportError:  # pragma: no cover - httpx is in the dev extras
    pass
else:
    TRANSPORTS["httpx"] = lambda limits: HttpxTransport(limits=limits, http2=False)


@pytest.fixture(params=TRANSPORTS.keys())
def make_transport(request: pytest.FixtureRequest) -> Callable[[Limits], object]:
    return TRANSPORTS[request.param]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [CAP - 1, CAP, CAP + 1])
async def test_a_body_past_the_cap_fails_and_one_within_it_is_read(
    make_transport: Callable[[Limits], object], size: int, chunked: bool
) -> None:
    transport = make_transport(Limits(max_response_size=CAP))
    async with KeepAliveServer(Behaviour(body_size=size, chunked=chunked)) as server:
        client = microcall.AsyncClient(server.url, transport=transport)  # type: ignore[arg-type]
        async with client:
            if size <= CAP:
                response = await client.get("/")
                assert len(response.content) == size
            else:
                with pytest.raises(ResponseTooLarge, match="max_response_size"):
                    await client.get("/")
            # The client is still fine afterwards.
            server.behaviour.body_size = 10
            assert (await client.get("/")).content == b"x" * 10


async def test_a_lying_content_length_past_the_cap_is_refused_before_reading(
    make_transport: Callable[[Limits], object],
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = make_transport(Limits(max_response_size=CAP))
    try:
        async with microcall.AsyncClient(
            f"http://127.0.0.1:{port}",
            transport=transport,  # type: ignore[arg-type]
            timeout=3,
        ) as client:
            with pytest.raises(ResponseTooLarge, match="10000000000"):
                await client.get("/")
    finally:
        server.close()


async def test_no_cap_reads_everything(serve: Serve) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * (CAP * 3))

    app = web.Application()
    app.router.add_get("/", big)
    url = await serve(app)
    transport = AiohttpTransport(limits=Limits(max_response_size=None))
    async with microcall.AsyncClient(url, transport=transport) as client:
        assert len((await client.get("/")).content) == CAP * 3


@pytest.mark.parametrize("cap", [-1, 1.5, True, "10"])
def test_a_bad_cap_is_refused_at_construction(cap: object) -> None:
    with pytest.raises(ConfigurationError, match="max_response_size"):
        Limits(max_response_size=cap)  # type: ignore[arg-type]


def redirecting_app() -> web.Application:
    async def to(request: web.Request) -> web.Response:
        # Sent as given, even a Location no URL parser takes.
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def loop_a(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop-b")

    async def loop_b(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop-a")

    async def chain(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/chain/{int(request.match_info['n']) + 1}")

    app = web.Application()
    app.router.add_get("/to", to)
    app.router.add_get("/loop-a", loop_a)
    app.router.add_get("/loop-b", loop_b)
    app.router.add_get("/chain/{n}", chain)
    return app


@pytest.mark.parametrize(
    "location",
    ["ftp://example.invalid/file", "mailto:someone@example.invalid", "http://", "http://[::1"],
)
async def test_a_redirect_that_cannot_be_followed_is_a_call_error(
    serve: Serve, make_transport: Callable[[Limits], object], location: str
) -> None:
    transport = make_transport(Limits())
    if location == "http://" and not isinstance(transport, AiohttpTransport | H1Transport):
        pytest.skip("httpx follows a Location without a host to the request's own host")
    url = await serve(redirecting_app())
    async with microcall.AsyncClient(url, transport=transport) as client:  # type: ignore[arg-type]
        with pytest.raises(RedirectError, match="cannot be followed") as caught:
            await client.get("/to", params={"to": location})
    assert isinstance(caught.value, microcall.CallError)
    assert caught.value.attempts


async def test_a_redirect_loop_says_it_is_a_loop(
    serve: Serve, make_transport: Callable[[Limits], object]
) -> None:
    url = await serve(redirecting_app())
    transport = make_transport(Limits())
    async with microcall.AsyncClient(url, transport=transport) as client:  # type: ignore[arg-type]
        with pytest.raises(RedirectError, match="redirect loop"):
            await client.get("/loop-a")
        with pytest.raises(RedirectError) as caught:
            await client.get("/chain/0")
    if isinstance(transport, AiohttpTransport | H1Transport):  # httpx keeps no history
        assert "redirected more than" in str(caught.value)
        assert "loop" not in str(caught.value)
