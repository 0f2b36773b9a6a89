"""Streamed responses on every transport, against real servers on 127.0.0.1.

Bodies framed by Content-Length and by chunked encoding, compressed bodies,
server-sent events from aiohttp and from Starlette on uvicorn, a body handed
over before the server has finished it, and the connection's fate at the end
of the ``async with`` block: back in the pool when the body was read to the
end, closed otherwise, whatever ended the block. The faults (a body cut
mid-way, a server that goes quiet or trickles, a deadline that passes
mid-body) come from the raw-socket server of tests/faultserver.py.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

import microcall
from microcall import (
    DeadlineExceeded,
    IdleTimeout,
    ReadError,
    ServerSentEvent,
    TransportError,
    UsageError,
)
from tests.faultserver import TRICKLE_BODY, Behaviour, Fault, FaultServer, fault_server
from tests.transports._stream_server import (
    StreamServer,
    body_of,
    client,
    eventually,
    in_use,
    transports,
)

TRANSPORTS = transports()


@pytest.fixture(params=list(TRANSPORTS))
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return TRANSPORTS[request.param]


@pytest.fixture
async def server() -> AsyncIterator[StreamServer]:
    async with StreamServer() as running:
        yield running


@pytest.fixture
async def faults() -> AsyncIterator[FaultServer]:
    async with fault_server() as running:
        yield running


# ---------------------------------------------------------------- the body as it arrives


async def test_the_head_and_the_first_bytes_come_before_the_server_has_sent_the_rest(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with client(server, make()) as c, c.stream("GET", "/gated") as response:
        assert response.status_code == 200
        pieces = response.aiter_bytes()
        received = b""
        while len(received) < len(b"first"):
            received += await anext(pieces)
        assert received == b"first"  # the server is still waiting at its gate
        server.gate.set()
        received += b"".join([piece async for piece in pieces])
    assert received == b"firstrest"


@pytest.mark.parametrize(
    ("path", "size"),
    [("/length/300000", 300_000), ("/chunks/30/10000", 300_000), ("/length/0", 0)],
    ids=["content-length", "chunked", "empty"],
)
async def test_a_body_read_to_its_end_is_whole_and_its_connection_is_reused(
    make: Callable[..., Any], server: StreamServer, path: str, size: int
) -> None:
    transport = make()
    async with client(server, transport) as c:
        for _ in range(2):
            async with c.stream("GET", path) as response:
                received = b"".join([piece async for piece in response.aiter_bytes()])
                assert received == body_of(size)
                assert response.is_closed
            assert in_use(transport) == 0
        # Both calls went over one keep-alive connection.
        assert len(set(server.peers)) == 1
        assert server.open_connections == 1


async def test_chunk_size_cuts_the_body_into_equal_chunks(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with client(server, make()) as c, c.stream("GET", "/chunks/7/3001") as response:
        chunks = [chunk async for chunk in response.aiter_bytes(chunk_size=4096)]
    assert {len(chunk) for chunk in chunks[:-1]} == {4096}
    assert 0 < len(chunks[-1]) <= 4096
    assert b"".join(chunks) == body_of(7 * 3001)


async def test_aread_holds_the_body_and_the_iterators_replay_it(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with client(server, make()) as c, c.stream("GET", "/chunks/3/1000") as response:
        with pytest.raises(UsageError, match="read first"):
            response.content  # noqa: B018 - the property is what is tested
        body = await response.aread()
        assert body == response.content == body_of(3000)
        assert b"".join([piece async for piece in response.aiter_bytes()]) == body


async def test_aread_is_capped_as_a_buffered_call_while_iterating_is_not(
    make: Callable[..., Any], server: StreamServer
) -> None:
    # A server that sends more than the client may hold: aread() refuses it
    # and lets go of the connection; the same body iterated is fine.
    transport = make(limits=microcall.Limits(max_response_size=2500))
    async with client(server, transport) as c:
        async with c.stream("GET", "/chunks/3/1000") as response:
            with pytest.raises(microcall.ResponseTooLarge, match="max_response_size"):
                await response.aread()
            assert response.is_closed
            assert response.attempts  # the error names the call's attempts too
        await eventually(lambda: in_use(transport) == 0, "the connection let go")
        async with c.stream("GET", "/chunks/3/1000") as response:
            assert b"".join([piece async for piece in response.aiter_bytes()]) == body_of(3000)


async def test_a_body_is_read_once(make: Callable[..., Any], server: StreamServer) -> None:
    async with client(server, make()) as c, c.stream("GET", "/chunks/3/1000") as response:
        async for _ in response.aiter_bytes():
            break
        with pytest.raises(UsageError, match="read once"):
            async for _ in response.aiter_bytes():
                pass
        with pytest.raises(UsageError, match="already iterated"):
            await response.aread()


async def test_a_gzip_body_is_decoded_as_it_arrives(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with (
        client(server, make()) as c,
        c.stream("GET", "/gzip/500000", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers["Content-Encoding"] == "gzip"
        received = b"".join([piece async for piece in response.aiter_bytes()])
    assert received == body_of(500_000)


async def test_lines_come_whole_whatever_the_pieces(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with client(server, make()) as c, c.stream("GET", "/sse") as response:
        lines = [line async for line in response.aiter_lines()]
    assert lines[:3] == [": hello", "event: tick", "data: first line"]
    assert lines.count("") == 3


EXPECTED_EVENTS = [
    ServerSentEvent(event="tick", data="first line\nsecond line", id="1", retry=1500),
    ServerSentEvent(event="message", data='{"n": 2}', id="1", retry=1500),
]


async def test_server_sent_events_from_aiohttp(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async with client(server, make()) as c, c.stream("GET", "/sse") as response:
        events = [event async for event in response.aiter_sse()]
    assert events == EXPECTED_EVENTS
    assert events[1].json() == {"n": 2}


async def test_server_sent_events_from_starlette_on_uvicorn(make: Callable[..., Any]) -> None:
    async def ticks(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for number in range(5):
                yield f"id: {number}\nevent: tick\ndata: {number}\n\n".encode()
                await asyncio.sleep(0.001)

        return StreamingResponse(events(), media_type="text/event-stream")

    config = uvicorn.Config(
        Starlette(routes=[Route("/ticks", ticks)]),
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    uvicorn_server = uvicorn.Server(config)
    serving = asyncio.create_task(uvicorn_server.serve())
    try:
        while not uvicorn_server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.005)
        port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
        async with (
            microcall.AsyncClient(f"http://127.0.0.1:{port}", transport=make()) as c,
            c.stream("GET", "/ticks") as response,
        ):
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = [event async for event in response.aiter_sse()]
    finally:
        uvicorn_server.should_exit = True
        await serving
    assert [(e.id, e.event, e.data) for e in events] == [(str(n), "tick", str(n)) for n in range(5)]


# ---------------------------------------------------------------- the block's end


async def _first_piece(response: microcall.AsyncStreamResponse) -> bytes:
    async for piece in response.aiter_bytes():
        return piece
    raise AssertionError("no body")


async def test_leaving_the_block_early_closes_the_connection(
    make: Callable[..., Any], server: StreamServer
) -> None:
    transport = make()
    async with client(server, transport) as c:
        async with c.stream("GET", "/endless") as response:
            assert await _first_piece(response)
            assert in_use(transport) == 1
        assert in_use(transport) == 0
        await eventually(lambda: server.streams_cut == 1, "the server saw the client leave")
        await eventually(lambda: server.open_connections == 0, "the connection closed")


async def test_an_exception_in_the_block_closes_the_connection(
    make: Callable[..., Any], server: StreamServer
) -> None:
    transport = make()
    async with client(server, transport) as c:

        async def fail_inside() -> None:
            async with c.stream("GET", "/endless") as response:
                await _first_piece(response)
                raise RuntimeError("the caller's own")

        with pytest.raises(RuntimeError, match="the caller's own"):
            await fail_inside()
        assert in_use(transport) == 0
        await eventually(lambda: server.open_connections == 0, "the connection closed")


async def test_cancelling_the_task_in_the_block_closes_the_connection(
    make: Callable[..., Any], server: StreamServer
) -> None:
    transport = make()
    reading = asyncio.Event()

    async def read_forever(c: microcall.AsyncClient) -> None:
        async with c.stream("GET", "/endless") as response:
            async for _ in response.aiter_bytes():
                reading.set()

    async with client(server, transport) as c:
        task = asyncio.create_task(read_forever(c))
        await asyncio.wait_for(reading.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert in_use(transport) == 0
        await eventually(lambda: server.open_connections == 0, "the connection closed")


async def test_a_partly_read_body_leaves_no_connection_in_use(
    make: Callable[..., Any], server: StreamServer
) -> None:
    transport = make()
    async with client(server, transport) as c:
        for path in ("/length/100", "/length/3000000", "/chunks/100/30000"):
            async with c.stream("GET", path) as response:
                await _first_piece(response)
            assert in_use(transport) == 0
        # The client still works, on whatever connections are left.
        async with c.stream("GET", "/length/10") as response:
            assert await response.aread() == body_of(10)


async def test_closing_the_client_closes_a_stream_left_open(
    make: Callable[..., Any], server: StreamServer
) -> None:
    c = client(server, make())
    call = c.stream("GET", "/endless")
    response = await call.__aenter__()
    await _first_piece(response)
    await c.aclose()
    await eventually(lambda: server.open_connections == 0, "the connection closed")
    with pytest.raises((TransportError, UsageError)):
        async for _ in response.aiter_bytes():
            pass
    await call.__aexit__(None, None, None)


# ---------------------------------------------------------------- faults mid-body


@pytest.mark.parametrize("fault", [Fault.HALF_BODY, Fault.RESET])
async def test_a_body_cut_mid_way_raises_read_error_and_says_what_was_tried(
    make: Callable[..., Any], faults: FaultServer, fault: Fault
) -> None:
    async with microcall.AsyncClient(faults.url(fault), transport=make()) as c:
        async with c.stream("GET", "/") as response:
            assert response.status_code == 200
            with pytest.raises(ReadError) as caught:
                await response.aread()
        assert caught.value.attempts == response.attempts
        assert len(caught.value.attempts) == 1
        assert caught.value.request is response.request
    await eventually(lambda: faults.open_connections == 0, "the connection closed")


async def test_a_body_that_goes_quiet_raises_idle_timeout(
    make: Callable[..., Any], faults: FaultServer
) -> None:
    async with (
        microcall.AsyncClient(faults.url(Behaviour.STALL_BODY), transport=make()) as c,
        c.stream("GET", "/", idle_timeout=0.2) as response,
    ):
        with pytest.raises(IdleTimeout, match="idle_timeout") as caught:
            async for _ in response.aiter_bytes():
                pass
        assert isinstance(caught.value, TimeoutError)
    await eventually(lambda: faults.open_connections == 0, "the connection closed")


async def test_a_trickle_within_the_idle_timeout_is_read_whole(
    make: Callable[..., Any], faults: FaultServer
) -> None:
    async with (
        microcall.AsyncClient(faults.url(Behaviour.TRICKLE_IN_TIME), transport=make()) as c,
        c.stream("GET", "/", idle_timeout=2.0) as response,
    ):
        assert await response.aread() == TRICKLE_BODY


async def test_the_calls_deadline_passing_mid_body_raises_deadline_exceeded(
    make: Callable[..., Any], faults: FaultServer
) -> None:
    async with (
        microcall.AsyncClient(faults.url(Behaviour.STALL_BODY), transport=make()) as c,
        c.stream("GET", "/", timeout=0.5) as response,  # the head comes at once
    ):
        assert response.status_code == 200
        with pytest.raises(DeadlineExceeded, match="deadline") as caught:
            await response.aread()
        assert caught.value.attempts == response.attempts
    await eventually(lambda: faults.open_connections == 0, "the connection closed")


async def test_body_timeout_gives_the_body_its_own_deadline(
    make: Callable[..., Any], faults: FaultServer
) -> None:
    async with (
        microcall.AsyncClient(faults.url(Behaviour.STALL_BODY), transport=make()) as c,
        c.stream("GET", "/", timeout=30, body_timeout=0.3) as response,
    ):
        with pytest.raises(DeadlineExceeded, match="body_timeout"):
            await response.aread()


async def test_a_head_that_never_comes_is_the_calls_deadline_as_for_any_call(
    make: Callable[..., Any], faults: FaultServer
) -> None:
    async with microcall.AsyncClient(faults.url(Fault.HANG), transport=make()) as c:
        with pytest.raises(DeadlineExceeded):
            async with c.stream("GET", "/", timeout=0.3):
                raise AssertionError("no head came")
    await eventually(lambda: faults.open_connections == 0, "the connection closed")


async def test_bad_chunking_is_a_transport_error_where_it_is_met(
    make: Callable[..., Any], faults: FaultServer
) -> None:
    # The bad chunk comes in the head's packet: met when the head is parsed
    # (h1 parses what arrived) or when the body is read (the others).
    async with microcall.AsyncClient(faults.url(Behaviour.BAD_CHUNKING), transport=make()) as c:
        with pytest.raises(TransportError):
            async with c.stream("GET", "/", timeout=5) as response:
                await response.aread()
    await eventually(lambda: faults.open_connections == 0, "the connection closed")


async def test_streams_ended_every_way_leave_no_warning_behind(
    make: Callable[..., Any], server: StreamServer
) -> None:
    async def fail_inside(c: microcall.AsyncClient) -> None:
        async with c.stream("GET", "/endless") as response:
            await _first_piece(response)
            raise RuntimeError("the caller's own")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with client(server, make()) as c:
            async with c.stream("GET", "/chunks/10/10000") as response:
                await response.aread()  # to the end
            async with c.stream("GET", "/endless") as response:
                await _first_piece(response)  # early exit
            async with c.stream("GET", "/length/3000000"):
                pass  # never read
            with pytest.raises(RuntimeError):
                await fail_inside(c)
        await eventually(lambda: server.open_connections == 0, "every connection closed")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# ---------------------------------------------------------------- a line that never ends

CAP = 200_000  # a few of the endless body's 64 KiB pieces


@pytest.mark.parametrize("kind", ["lines", "sse"])
async def test_a_line_that_never_ends_is_refused_at_the_size_cap_and_the_stream_closed(
    make: Callable[..., Any], server: StreamServer, kind: str
) -> None:
    transport = make(limits=microcall.Limits(max_response_size=CAP))
    async with client(server, transport) as c, c.stream("GET", "/endless") as response:
        read = response.aiter_lines() if kind == "lines" else response.aiter_sse()
        with pytest.raises(microcall.ResponseTooLarge, match="max_response_size"):
            async for _ in read:  # type: ignore[attr-defined]
                pass
        await eventually(lambda: server.streams_cut == 1, "the server saw the client leave")
        assert in_use(transport) == 0


async def test_a_gzip_body_cut_inside_whole_framing_is_a_protocol_error_on_the_default_transport(
    faults: FaultServer,
) -> None:
    """Decoded as it arrives too: the prefix that came is not passed off as the body.

    (aiohttp and httpx return the prefix: tests/faults/ keeps them as known failures.)
    """
    async with (
        microcall.AsyncClient(faults.url(Behaviour.CUT_GZIP), transport=TRANSPORTS["h1"]()) as c,
        c.stream("GET", "/") as response,
    ):
        pieces: list[bytes] = []

        async def read() -> None:
            async for piece in response.aiter_bytes():
                pieces.append(piece)

        with pytest.raises(microcall.ProtocolError, match="stops before the end of its stream"):
            await read()
        assert pieces  # the first piece was decoded before the rest came
