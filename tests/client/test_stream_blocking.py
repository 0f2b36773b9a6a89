"""The blocking ``Client.stream``: the body's pieces cross from the client's loop to the caller's thread.

The server (tests/transports/_stream_server.py) runs on a loop of its own in
a background thread, since a blocking Client refuses to run inside one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import microcall
from microcall import DeadlineExceeded, IdleTimeout, ServerSentEvent, UsageError
from tests.transports._stream_server import PATIENCE, StreamServer, body_of, in_use, transports

T = TypeVar("T")
TRANSPORTS = transports()


class Background:
    """A StreamServer on its own loop thread; ``run(coro)`` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = StreamServer()
        self.run(self.server.__aenter__())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(PATIENCE)

    def eventually(self, check: Callable[[], bool], what: str) -> None:
        async def checked() -> bool:
            return check()

        import time

        give_up = time.monotonic() + PATIENCE
        while not self.run(checked()):
            if time.monotonic() > give_up:
                raise AssertionError(f"never happened: {what}")
            time.sleep(0.01)

    def close(self) -> None:
        self.run(self.server.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def background() -> Iterator[Background]:
    running = Background()
    yield running
    running.close()


@pytest.fixture(params=list(TRANSPORTS))
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return TRANSPORTS[request.param]


def test_iter_bytes_reads_the_body_as_it_comes_and_the_connection_is_reused(
    background: Background, make: Callable[..., Any]
) -> None:
    transport = make()
    with microcall.Client(background.server.url, transport=transport) as client:
        for _ in range(2):
            with client.stream("GET", "/chunks/20/10000") as response:
                assert response.status_code == 200
                assert response.ok
                received = b"".join(response.iter_bytes())
                assert response.is_closed
            assert received == body_of(200_000)
        assert in_use(transport) == 0


def test_iter_bytes_with_a_chunk_size(background: Background) -> None:
    with (
        microcall.Client(background.server.url) as client,
        client.stream("GET", "/length/10000") as response,
    ):
        chunks = list(response.iter_bytes(chunk_size=3000))
    assert [len(chunk) for chunk in chunks] == [3000, 3000, 3000, 1000]


def test_read_lines_and_events(background: Background, make: Callable[..., Any]) -> None:
    with microcall.Client(background.server.url, transport=make()) as client:
        with client.stream("GET", "/length/1000") as response:
            assert response.read() == body_of(1000) == response.content
        with client.stream("GET", "/sse") as response:
            assert list(response.iter_lines())[:2] == [": hello", "event: tick"]
        with client.stream("GET", "/sse") as response:
            events = list(response.iter_sse())
    assert events[0] == ServerSentEvent(
        event="tick", data="first line\nsecond line", id="1", retry=1500
    )
    assert events[1].json() == {"n": 2}


def test_leaving_the_block_early_closes_the_connection(
    background: Background, make: Callable[..., Any]
) -> None:
    server = background.server
    cut = server.streams_cut
    transport = make()
    with microcall.Client(server.url, transport=transport) as client:
        with client.stream("GET", "/endless") as response:
            for _ in response.iter_bytes():
                break
        background.eventually(lambda: server.streams_cut == cut + 1, "the server saw it close")
        assert in_use(transport) == 0


def test_deadline_and_idle_timeout_mid_body(background: Background) -> None:
    with microcall.Client(background.server.url) as client:
        with (
            client.stream("GET", "/gated", timeout=0.5) as response,
            pytest.raises(DeadlineExceeded),
        ):
            response.read()
        with client.stream("GET", "/gated", idle_timeout=0.2) as response:
            pieces = response.iter_bytes()
            assert next(pieces).startswith(b"f")
            with pytest.raises(IdleTimeout):
                list(pieces)
        with client.stream("GET", "/gated") as response:
            with pytest.raises(UsageError, match="read"):
                response.text  # noqa: B018 - the property is what is tested
            response.raise_for_status()
            background.loop.call_soon_threadsafe(background.server.gate.set)
            assert response.read() == b"firstrest"
            assert response.text == "firstrest"


def test_stream_refuses_a_running_event_loop(background: Background) -> None:
    with microcall.Client(background.server.url) as client:

        async def inside() -> None:
            with pytest.raises(UsageError, match="AsyncClient"):
                client.stream("GET", "/length/1")

        asyncio.run(inside())


def test_a_failed_call_raises_at_the_with(background: Background) -> None:
    with microcall.Client("http://127.0.0.1:9", timeout=2) as client:
        call = client.stream("GET", "/")
        with pytest.raises(microcall.ConnectError):
            call.__enter__()


def test_closing_the_client_ends_a_stream_left_open(background: Background) -> None:
    server = background.server
    client = microcall.Client(server.url)
    call = client.stream("GET", "/endless")
    response = call.__enter__()
    pieces = response.iter_bytes()
    assert next(pieces)
    client.close()
    background.eventually(lambda: server.open_connections == 0, "the connection closed")
    # Reading on is a call closed mid-way, as for a read that was waiting.
    with pytest.raises(microcall.ClientClosed, match="closed while this stream was open"):
        next(pieces)
    call.__exit__(None, None, None)  # nothing left to close; no error


def test_iter_lines_refuses_a_line_past_the_size_cap_and_closes_the_stream(
    background: Background, make: Callable[..., Any]
) -> None:
    transport = make(limits=microcall.Limits(max_response_size=200_000))
    cut = background.server.streams_cut
    with microcall.Client(background.server.url, transport=transport) as client:
        with (
            client.stream("GET", "/endless") as response,
            pytest.raises(microcall.ResponseTooLarge, match="a line of the response"),
        ):
            for _ in response.iter_lines():
                pass
        background.eventually(
            lambda: background.server.streams_cut == cut + 1, "the server saw the client leave"
        )
