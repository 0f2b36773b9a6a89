"""Uploads meeting servers that do not take them: each ends typed, in time, with nothing left open.

A server that reads the head and closes (or resets) while a large body is
still going out, one that never reads at all, one that answers before the
body is in, one that redirects: each transport ends the call with the right
typed error (or the early answer) within the deadline, lets go of every
socket, and never sends a body read once a second time, not by the resend
on a fresh connection and not after a redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

import microcall
from tests.client._uploads import (
    MARGIN,
    TRANSPORTS,
    TransportName,
    Uploads,
    make_client,
    sha256,
    uploads_fixture,  # noqa: F401
    wait_until,
)
from tests.faultserver import Fault, FaultServer, fault_server
from tests.transports._keepalive_servers import Behaviour, ThreadedServer

BIG = 16 * 1024 * 1024  # far past what the socket buffers hold
TIMEOUT = 5.0


@pytest.fixture(name="faults")
async def faults_fixture() -> AsyncIterator[FaultServer]:
    async with fault_server() as server:
        yield server


class Counting:
    """A generator of ``size`` bytes that counts what was taken from it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        block = b"u" * 65536
        while self.taken < self.size:
            self.taken += len(block)
            yield block


@pytest.mark.parametrize("kind", ["generator", "file"])
@pytest.mark.parametrize("fault", [Fault.CLOSE, Fault.RESET_HEADERS, Fault.RESET], ids=str)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_that_stops_reading_ends_the_upload_typed_and_in_time(
    faults: FaultServer, tmp_path: Path, transport: TransportName, fault: Fault, kind: str
) -> None:
    process = psutil.Process()
    fds_before = process.num_fds()
    path = tmp_path / "big.bin"
    path.write_bytes(b"f" * BIG)
    source = Counting(BIG)
    async with make_client(transport, faults.url(fault), timeout=TIMEOUT) as client:
        started = time.monotonic()
        with path.open("rb") as opened:
            body = iter(source) if kind == "generator" else opened
            with pytest.raises(microcall.TransportError):
                await client.put("/upload", content=body)
        assert time.monotonic() - started < TIMEOUT + MARGIN
        assert await wait_until(lambda: faults.open_connections == 0)
    if kind == "generator":
        assert source.taken < BIG  # it stopped when the server did
        assert await wait_until(lambda: not body_threads())
    assert await wait_until(lambda: process.num_fds() <= fds_before), (
        f"{process.num_fds() - fds_before} descriptors left open"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_that_never_reads_ends_the_upload_at_the_deadline(
    transport: TransportName,
) -> None:
    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            accepted.append(conn)  # held open, never read

    acceptor = asyncio.create_task(accept())
    port = listener.getsockname()[1]
    source = Counting(1024 * 1024 * 1024)
    try:
        async with make_client(transport, f"http://127.0.0.1:{port}", timeout=0.5) as client:
            started = time.monotonic()
            with pytest.raises(microcall.DeadlineExceeded):
                await client.put("/upload", content=iter(source))
            assert time.monotonic() - started < 0.5 + MARGIN
    finally:
        acceptor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acceptor
        for conn in accepted:
            # The client closed its end: the server's side reads the end of the stream.
            conn.setblocking(True)
            conn.settimeout(5)
            while conn.recv(1 << 20):
                pass
            conn.close()
        listener.close()
    # Flow control held it back: only what the socket buffers took was read,
    # and the thread reading the generator ahead was let go.
    assert source.taken < 256 * 1024 * 1024
    assert await wait_until(lambda: not body_threads())


def body_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "microcall-body"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_before_the_body_is_in_is_returned(
    uploads: Uploads, transport: TransportName
) -> None:
    source = Counting(64 * 1024 * 1024)
    async with make_client(transport, uploads.base, timeout=TIMEOUT * 4) as client:
        response = await client.post("/refuse", content=iter(source))
        assert response.status_code == 413
        assert response.text == "too large"
        # The connection that carried the cut request is not reused for this one.
        after = await client.post("/echo", content=b"next")
    assert after.json()["sha256"] == sha256(b"next")


@contextlib.contextmanager
def refusing_early() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that answers a POST's head with a keep-alive 413 and never reads again.

    Other requests get a 200. Yields its URL and the connections it accepted.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            if head.startswith(b"POST"):
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            stop.wait()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        listener.close()


# httpcore writes the whole body before it reads an answer: against a server
# that stopped reading, the call ends at its deadline (DeadlineExceeded), the
# early answer unseen. Strict: it turns into an error the day httpcore reads
# while it writes.
WRITES_WHOLE_BODY_FIRST = pytest.mark.xfail(
    strict=True, raises=microcall.DeadlineExceeded, reason="httpcore writes the body first"
)


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(name, marks=[WRITES_WHOLE_BODY_FIRST] if name == "httpx" else [])
        for name in TRANSPORTS
    ],
)
async def test_a_body_in_hand_answered_early_leaves_its_connection_out_of_the_pool(
    transport: TransportName,
) -> None:
    """The rest of the body still waits to go out: a request sent after it would queue behind."""
    with refusing_early() as (url, accepted):
        async with make_client(transport, url, timeout=TIMEOUT) as client:
            refused = await client.post("/upload", content=b"u" * BIG)
            started = time.monotonic()
            after = await client.get("/ping")
            took = time.monotonic() - started
        assert (refused.status_code, after.status_code) == (413, 200)
        assert len(accepted) == 2
        assert took < TIMEOUT / 2  # not the deadline, spent queued behind the body


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_307_is_followed_with_a_file_and_refused_with_a_generator(
    uploads: Uploads, tmp_path: Path, transport: TransportName
) -> None:
    path = tmp_path / "moved.bin"
    path.write_bytes(b"m" * 200_000)
    async with make_client(transport, uploads.base, timeout=TIMEOUT) as client:
        with path.open("rb") as opened:
            followed = await client.put("/moved", content=opened)
        with pytest.raises(microcall.RedirectError, match="body is read once"):
            await client.put("/moved", content=iter(Counting(200_000)))
    assert followed.json()["sha256"] == sha256(b"m" * 200_000)


# ------------------------------------------------------------------ the resend on a fresh connection

# Transports with microcall's resend (httpx has its own pool rules).
RESENDING = ("h1", "aiohttp")


@pytest.mark.parametrize("transport", RESENDING)
async def test_a_generator_taken_from_is_not_resent_on_a_fresh_connection(
    transport: TransportName,
) -> None:
    # The server answers each connection's first request, then closes it
    # unanswered when the next one (body and all) has arrived: a PUT would
    # be resent, but its generator was read to its end the first time.
    body = b"only once"
    with ThreadedServer(Behaviour(answer_once=True)) as server:
        async with make_client(transport, server.url, timeout=TIMEOUT) as client:
            await client.get("/")
            with pytest.raises(microcall.ReadError) as raised:
                await client.put("/", content=iter([body]), headers={"Content-Length": "9"})
    assert not raised.value.attempts[0].resent
    assert server.counts.seen[body] == 1


@pytest.mark.parametrize("transport", RESENDING)
async def test_a_file_is_resent_whole_on_a_fresh_connection(
    tmp_path: Path, transport: TransportName
) -> None:
    path = tmp_path / "resend.bin"
    path.write_bytes(b"resent whole")
    with ThreadedServer(Behaviour(answer_once=True)) as server:
        async with make_client(transport, server.url, timeout=TIMEOUT) as client:
            await client.get("/")
            with path.open("rb") as opened:
                response = await client.put("/", content=opened)
    assert response.content == b"resent whole"
    assert response.attempts[0].resent
    assert server.counts.seen[b"resent whole"] == 2  # once unanswered, once answered
