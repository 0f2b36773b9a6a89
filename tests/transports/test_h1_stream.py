"""The HTTP/1.1 transport's streamed bodies: the reader's stream mode, back-pressure, redirects."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

import microcall
from microcall.transports._h1_conn import PAUSE_AT
from microcall.transports._h1_stream import H1Body
from microcall.transports._h1_wire import ResponseReader
from microcall.transports.h1 import H1Transport
from tests._observers import CallEnds
from tests.conftest import Serve
from tests.transports._stream_server import StreamServer, body_of, eventually, in_use, transports

# asyncio's largest single read from a socket.
LARGEST_READ = 256 * 1024


def test_a_streaming_reader_hands_the_head_over_then_the_body_piece_by_piece() -> None:
    reader = ResponseReader(False, None, stream=True)
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert reader.ready
    assert not reader.complete
    assert reader.take() == b""
    reader.feed(b"5\r\nhello\r\n")
    reader.feed(b"6\r\n world\r\n")
    assert reader.pending == 11
    assert reader.take() == b"hello world"
    assert reader.pending == 0
    reader.feed(b"0\r\n\r\n")
    assert reader.complete
    assert reader.reusable
    assert reader.take() == b""


def test_a_reader_that_does_not_stream_is_ready_only_when_complete() -> None:
    reader = ResponseReader(False, None)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert not reader.ready
    reader.feed(b"lo")
    assert reader.ready
    assert reader.body() == b"hello"


async def test_a_slow_reader_holds_about_a_megabyte_not_the_body() -> None:
    async with StreamServer() as server:
        transport = H1Transport()
        async with (
            microcall.AsyncClient(server.url, transport=transport) as client,
            client.stream("GET", "/endless") as response,
        ):
            assert await response._next_piece()
            source = response._source
            assert isinstance(source, H1Body)
            reader = source._reader
            # The server writes as fast as it can; the client reads nothing.
            await eventually(lambda: reader.pending >= PAUSE_AT, "a megabyte waited")
            await asyncio.sleep(0.3)
            assert reader.pending <= PAUSE_AT + LARGEST_READ
            # Reading resumes the socket.
            taken = 0
            while taken < 4 * PAUSE_AT:
                taken += len(await response._next_piece())
        assert in_use(transport) == 0


@pytest.mark.parametrize("name", list(transports()))
async def test_a_redirect_is_followed_and_only_the_last_body_is_streamed(
    serve: Serve, name: str
) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=302, headers={"Location": "/there"})
        await response.prepare(request)
        await response.write(b"a body nobody reads " * 1000)
        return response

    async def there(request: web.Request) -> web.Response:
        return web.Response(body=body_of(50_000))

    app = web.Application()
    app.router.add_get("/here", moved)
    app.router.add_get("/there", there)
    base = await serve(app)
    make: Callable[..., Any] = transports()[name]
    transport = make()
    async with (
        microcall.AsyncClient(base, transport=transport) as client,
        client.stream("GET", "/here") as response,
    ):
        assert response.status_code == 200
        assert response.url.path == "/there"
        assert await response.aread() == body_of(50_000)
    assert in_use(transport) == 0


async def test_a_stream_dropped_unclosed_gives_its_connection_back_and_says_so() -> None:
    """Misuse (entered without ``async with``, never closed), but not a pool slot lost for ever.

    Nor a call that never ends: its observers hear it end, as given up on
    (a span that never ended, and an in-flight gauge stuck at 1, otherwise).
    """
    observer = CallEnds()
    async with StreamServer() as server:
        limits = microcall.Limits(max_connections=1)
        async with microcall.AsyncClient(
            server.url, limits=limits, timeout=5.0, observers=[observer]
        ) as client:
            response = await client.stream("GET", "/endless").open()
            pieces = response.aiter_bytes()
            assert await anext(pieces)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                del response, pieces
                # The loop finalises the dropped async generator (an aclose()
                # task of its own) before the response can be collected.
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    gc.collect()
                    if caught:
                        break
            assert [str(warning.message) for warning in caught] == [
                "a streamed response was dropped without being read to its end or closed; "
                "use `async with client.stream(...)`"
            ]
            # The pool's one slot comes back on the loop's next turn.
            assert (await client.get("/length/10")).content == body_of(10)
    dropped, fine = observer.errors
    assert isinstance(dropped, asyncio.CancelledError)
    assert fine is None
