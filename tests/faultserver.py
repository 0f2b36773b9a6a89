"""A raw-socket server on 127.0.0.1 that misbehaves on purpose, one port per fault.

Theory of operation. :class:`FaultServer` opens one listening socket per
:class:`Fault` (port 0, loopback only) and answers every connection on that
port the same broken way, so a test picks a fault by picking a URL:

* ``REFUSE``    a port that is bound but not listening: connecting is refused.
* ``HANG``      accepts, reads whatever comes, never answers (until the peer leaves).
* ``RESET``     reads the request, sends the status line, the headers and part of
                the body, then closes with ``SO_LINGER`` 0 so the peer gets a RST.
* ``RESET_HEADERS`` the same, but the RST comes in the middle of the headers.
* ``CLOSE``     reads the request and closes cleanly (FIN) without a byte of answer.
* ``HALF_BODY`` reads the request, announces a Content-Length larger than the
                bytes it sends, then closes cleanly (FIN): the body ends early.
* ``GARBAGE``   reads the request and answers with something that is not HTTP.
* ``TRICKLE``   reads the request, then sends a valid response one byte every
                ``trickle_interval`` seconds (a slow-loris server).

The server counts the connections it accepted per fault and keeps those still
open, so tests can check that a client let go of every socket it opened.

Use it as an async context manager (``async with fault_server() as faults``)
or through the ``faults`` fixture (import ``faults_fixture`` into a test
module; the fixture is called ``faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator

import pytest

import microcall

# SO_LINGER on with a zero timeout: close() discards unsent data and sends RST.
_LINGER_ABORT = struct.pack("ii", 1, 0)

# Promises 1000 bytes of body; the faults that use it send far fewer.
LONG_BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
PARTIAL_BODY = b"only part of the body"
PARTIAL_HEAD = b"HTTP/1.1 200 OK\r\nContent-Ty"
GARBAGE = b"SSH-2.0-OpenSSH_9.6\r\n\r\n"
TRICKLE_BODY = b"trickled ok"
TRICKLE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(TRICKLE_BODY)).encode()
    + b"\r\n\r\n"
    + TRICKLE_BODY
)
DEFAULT_TRICKLE_INTERVAL = 0.05


class Fault(enum.StrEnum):
    """How the server misbehaves on a port."""

    REFUSE = "refuse"
    HANG = "hang"
    RESET = "reset"
    RESET_HEADERS = "reset_headers"
    CLOSE = "close"
    HALF_BODY = "half_body"
    GARBAGE = "garbage"
    TRICKLE = "trickle"


# What each fault must become, whatever the transport: one request on the
# wire, typed by what went wrong.
EXPECTED_ERROR: dict[Fault, type[microcall.CallError]] = {
    Fault.REFUSE: microcall.ConnectError,
    Fault.HANG: microcall.DeadlineExceeded,
    Fault.RESET: microcall.ReadError,
    Fault.RESET_HEADERS: microcall.ReadError,
    Fault.CLOSE: microcall.ReadError,
    Fault.HALF_BODY: microcall.ReadError,
    Fault.GARBAGE: microcall.ProtocolError,
    Fault.TRICKLE: microcall.DeadlineExceeded,
}


class FaultServer:
    """One loopback port per fault; ``url(fault)`` is the base URL to call."""

    def __init__(self, *, trickle_interval: float = DEFAULT_TRICKLE_INTERVAL) -> None:
        self.trickle_interval = trickle_interval
        self.accepted: Counter[Fault] = Counter()
        self._urls: dict[Fault, str] = {}
        self._servers: list[asyncio.Server] = []
        self._refusing: socket.socket | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def url(self, fault: Fault) -> str:
        """``http://127.0.0.1:<port>`` of the port that misbehaves with ``fault``."""
        return self._urls[fault]

    @property
    def open_connections(self) -> int:
        """Server-side sockets still open: each is a connection the client has not closed."""
        return len(self._open)

    async def start(self) -> None:
        # Bound but never listening: the kernel refuses connections, and holding
        # the port stops anything else from taking it while the test runs.
        refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        refusing.bind(("127.0.0.1", 0))
        self._refusing = refusing
        self._urls[Fault.REFUSE] = _base_url(refusing.getsockname())
        for fault in Fault:
            if fault is Fault.REFUSE:
                continue
            server = await asyncio.start_server(
                functools.partial(self._accept, fault), "127.0.0.1", 0
            )
            self._servers.append(server)
            self._urls[fault] = _base_url(server.sockets[0].getsockname())

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._refusing is not None:
            self._refusing.close()
            self._refusing = None

    async def __aenter__(self) -> FaultServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ misbehaving

    async def _accept(
        self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted[fault] += 1
        self._open.add(writer)
        try:
            await _FAULTS[fault](self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up first: that is what several tests are about
        except asyncio.CancelledError:
            # Only aclose() cancels a handler. Ending quietly matters: on Python
            # 3.11 the stream server's done-callback calls task.exception(),
            # which raises (and logs) for a cancelled task.
            pass
        finally:
            self._handlers.discard(task)
            self._open.discard(writer)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Keep reading so the socket is closed as soon as the client leaves,
        # and never write a byte.
        while await reader.read(4096):
            pass

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reset_after(LONG_BODY_HEAD + PARTIAL_BODY, reader, writer)

    async def _reset_headers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _reset_after(PARTIAL_HEAD, reader, writer)

    async def _close(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.close()
        await writer.wait_closed()

    async def _garbage(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(GARBAGE)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def _half_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(LONG_BODY_HEAD + PARTIAL_BODY)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        for index in range(len(TRICKLE_RESPONSE)):
            if writer.transport.is_closing() or reader.at_eof():
                return  # the client gave up (RST or FIN): stop, as a real server would
            writer.write(TRICKLE_RESPONSE[index : index + 1])
            await writer.drain()
            await asyncio.sleep(self.trickle_interval)
        # A keep-alive client may send another request; wait for it to leave.
        while await reader.read(4096):
            pass


_FAULTS = {
    Fault.HANG: FaultServer._hang,
    Fault.RESET: FaultServer._reset,
    Fault.RESET_HEADERS: FaultServer._reset_headers,
    Fault.CLOSE: FaultServer._close,
    Fault.HALF_BODY: FaultServer._half_body,
    Fault.GARBAGE: FaultServer._garbage,
    Fault.TRICKLE: FaultServer._trickle,
}


async def _read_request_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers; a body, if any, is left unread (no fault needs it).

    A head longer than the reader's limit (64 KiB) raises LimitOverrunError,
    which ends the connection like any other client that went wrong.
    """
    return await reader.readuntil(b"\r\n\r\n")


async def _reset_after(
    sent: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read the request, send ``sent``, then abort the connection with a RST."""
    await _read_request_head(reader)
    writer.write(sent)
    await writer.drain()
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
    writer.transport.abort()


def _base_url(address: tuple[str, int]) -> str:
    host, port = address[:2]
    return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def fault_server(
    *, trickle_interval: float = DEFAULT_TRICKLE_INTERVAL
) -> AsyncIterator[FaultServer]:
    """``async with fault_server() as faults: faults.url(Fault.HANG)``."""
    server = FaultServer(trickle_interval=trickle_interval)
    async with server:
        yield server


@pytest.fixture(name="faults")
async def faults_fixture() -> AsyncIterator[FaultServer]:
    """A running :class:`FaultServer` for one test (default trickle interval)."""
    async with fault_server() as server:
        yield server
