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

Those eight are the classic faults every transport test runs through
(:data:`EXPECTED_ERROR`). The same server also opens one port per
:class:`Behaviour`: the rest of the misbehaviour matrix of tests/faults/, and
two well-behaved answers the soak mixes in. A behaviour that answers at all
answers every request of a keep-alive connection in turn, and its body is the
request target (``/call/17`` answers ``/call/17``), so a test can tell a body
that belongs to another request:

* ``STALL_HEADERS`` sends the status line, then nothing (until the peer leaves).
* ``STALL_BODY``    sends the head and part of a 1000-byte body, then nothing.
* ``CLOSE_HEADERS`` sends part of the headers, then closes cleanly (FIN).
* ``BAD_STATUS``    answers with a status line whose code is not a number.
* ``HUGE_HEADERS``  answers with one header line of :data:`HUGE_HEADER_SIZE` bytes.
* ``SHORT_LENGTH``  announces fewer bytes than it sends: the extra bytes are a
                    whole second response, which must never be read as the
                    answer to the next request on the connection.
* ``BAD_CHUNKING``  a chunked body whose second chunk size is not hexadecimal.
* ``HTTP10``        an HTTP/1.0 answer without Content-Length: the body ends at close.
* ``INFORMATIONAL`` ``100 Continue`` and ``103 Early Hints`` before the answer.
* ``UPGRADE``       ``101 Switching Protocols`` to a websocket nobody asked for.
* ``CUT_GZIP``      a gzip body cut halfway, its Content-Length the cut length:
                    the framing is whole, the compressed stream is not.
* ``CLOSE_AFTER_ANSWER`` answers (keep-alive, nothing announced), then closes
                    the connection ``close_delay`` seconds later, as a server
                    with a short idle timeout does.
* ``TRICKLE_IN_TIME`` the trickle, one byte every ``fast_trickle_interval``
                    seconds: slow, but done well within a generous deadline.
* ``ECHO``          a well-behaved keep-alive server.
* ``SLOW``          the same, answering each request after ``slow_delay`` seconds.

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
import gzip
import random
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
# TRICKLE_RESPONSE is about 80 bytes: at 2 ms a byte it takes ~0.2 s, a few
# event-loop turns per byte even on a loaded machine.
DEFAULT_FAST_TRICKLE_INTERVAL = 0.002
DEFAULT_SLOW_DELAY = 0.05
DEFAULT_CLOSE_DELAY = 0.0

STATUS_LINE_ONLY = b"HTTP/1.1 200 OK\r\n"
BAD_STATUS = b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok"
# 32 times aiohttp's default limit for one header line (8190 bytes) and more
# than twice httpcore's for a whole head (100 KiB): every client must refuse it.
HUGE_HEADER_SIZE = 256 * 1024
# The extra bytes a SHORT_LENGTH answer sends past its Content-Length.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
BAD_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\nzz\r\nnot a chunk\r\n0\r\n\r\n"
)
INFORMATIONAL_HEAD = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
)
# Past any single read buffer, so the client must read until the close.
HTTP10_FILLER = b"." * 100_000
UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
# Noise compresses to about its own size: the cut body is 64 KiB, sent in two
# parts so that a streamed read decodes it as it arrives.
_GZIPPED = gzip.compress(random.Random(7).randbytes(128 * 1024), mtime=0)
CUT_GZIP_BODY = _GZIPPED[: 64 * 1024]
CUT_GZIP_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
    + str(len(CUT_GZIP_BODY)).encode()
    + b"\r\n\r\n"
)


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


class Behaviour(enum.StrEnum):
    """The rest of the misbehaviour matrix, and two good answers (see the module docstring)."""

    STALL_HEADERS = "stall_headers"
    STALL_BODY = "stall_body"
    CLOSE_HEADERS = "close_headers"
    BAD_STATUS = "bad_status"
    HUGE_HEADERS = "huge_headers"
    SHORT_LENGTH = "short_length"
    BAD_CHUNKING = "bad_chunking"
    HTTP10 = "http10"
    INFORMATIONAL = "informational"
    UPGRADE = "upgrade"
    CUT_GZIP = "cut_gzip"
    CLOSE_AFTER_ANSWER = "close_after_answer"
    TRICKLE_IN_TIME = "trickle_in_time"
    ECHO = "echo"
    SLOW = "slow"


Port = Fault | Behaviour


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

    def __init__(
        self,
        *,
        trickle_interval: float = DEFAULT_TRICKLE_INTERVAL,
        fast_trickle_interval: float = DEFAULT_FAST_TRICKLE_INTERVAL,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        close_delay: float = DEFAULT_CLOSE_DELAY,
    ) -> None:
        self.trickle_interval = trickle_interval
        self.fast_trickle_interval = fast_trickle_interval
        self.slow_delay = slow_delay
        self.close_delay = close_delay
        self.accepted: Counter[Port] = Counter()
        self._urls: dict[Port, str] = {}
        self._servers: list[asyncio.Server] = []
        self._refusing: socket.socket | None = None
        self._open: dict[asyncio.StreamWriter, Port] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    def url(self, fault: Port) -> str:
        """``http://127.0.0.1:<port>`` of the port that misbehaves with ``fault``."""
        return self._urls[fault]

    @property
    def open_connections(self) -> int:
        """Server-side sockets still open: each is a connection the client has not closed."""
        return len(self._open)

    def open_connections_on(self, fault: Port) -> int:
        """The open connections of one port."""
        return sum(1 for port in self._open.values() if port is fault)

    @property
    def handler_tasks(self) -> frozenset[asyncio.Task[None]]:
        """The server's own tasks (one per open connection), for counting a client's tasks apart."""
        return frozenset(self._handlers)

    async def start(self) -> None:
        # Bound but never listening: the kernel refuses connections, and holding
        # the port stops anything else from taking it while the test runs.
        refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        refusing.bind(("127.0.0.1", 0))
        self._refusing = refusing
        self._urls[Fault.REFUSE] = _base_url(refusing.getsockname())
        for fault in [*Fault, *Behaviour]:
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
        self, fault: Port, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted[fault] += 1
        self._open[writer] = fault
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
            self._open.pop(writer, None)
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

    async def _trickle_in_time(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _read_request_head(reader)
        for index in range(len(TRICKLE_RESPONSE)):
            writer.write(TRICKLE_RESPONSE[index : index + 1])
            await writer.drain()
            await asyncio.sleep(self.fast_trickle_interval)
        await _drain_until_eof(reader)

    async def _stall_headers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _send_then_stall(STATUS_LINE_ONLY, reader, writer)

    async def _stall_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_then_stall(LONG_BODY_HEAD + PARTIAL_BODY, reader, writer)

    async def _close_headers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _send_then_close(PARTIAL_HEAD, reader, writer)

    async def _bad_status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_then_stall(BAD_STATUS, reader, writer)

    async def _huge_headers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * HUGE_HEADER_SIZE
        await _send_then_stall(head + b"\r\nContent-Length: 2\r\n\r\nok", reader, writer)

    async def _bad_chunking(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Stalls rather than closes: the bad chunk size must be the only fault.
        await _send_then_stall(BAD_CHUNKED, reader, writer)

    async def _upgrade(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_then_stall(UPGRADE, reader, writer)

    async def _cut_gzip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(CUT_GZIP_HEAD + CUT_GZIP_BODY[:1024])
        await writer.drain()
        await asyncio.sleep(0.05)  # the head and a first piece come before the rest
        writer.write(CUT_GZIP_BODY[1024:])
        await writer.drain()
        await _drain_until_eof(reader)

    async def _http10(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = _target(await _read_request_head(reader))
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        writer.write(target + HTTP10_FILLER)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def _short_length(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while target := await _next_target(reader):
            writer.write(_answer(target) + SMUGGLED)
            await writer.drain()

    async def _informational(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while target := await _next_target(reader):
            writer.write(INFORMATIONAL_HEAD + _answer(target))
            await writer.drain()

    async def _close_after_answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        target = _target(await _read_request_head(reader))
        writer.write(_answer(target))
        await writer.drain()
        if self.close_delay:
            await asyncio.sleep(self.close_delay)
        writer.close()
        await writer.wait_closed()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while target := await _next_target(reader):
            writer.write(_answer(target))
            await writer.drain()

    async def _slow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while target := await _next_target(reader):
            await asyncio.sleep(self.slow_delay)
            writer.write(_answer(target))
            await writer.drain()


_FAULTS = {
    Fault.HANG: FaultServer._hang,
    Fault.RESET: FaultServer._reset,
    Fault.RESET_HEADERS: FaultServer._reset_headers,
    Fault.CLOSE: FaultServer._close,
    Fault.HALF_BODY: FaultServer._half_body,
    Fault.GARBAGE: FaultServer._garbage,
    Fault.TRICKLE: FaultServer._trickle,
    Behaviour.STALL_HEADERS: FaultServer._stall_headers,
    Behaviour.STALL_BODY: FaultServer._stall_body,
    Behaviour.CLOSE_HEADERS: FaultServer._close_headers,
    Behaviour.BAD_STATUS: FaultServer._bad_status,
    Behaviour.HUGE_HEADERS: FaultServer._huge_headers,
    Behaviour.SHORT_LENGTH: FaultServer._short_length,
    Behaviour.BAD_CHUNKING: FaultServer._bad_chunking,
    Behaviour.HTTP10: FaultServer._http10,
    Behaviour.INFORMATIONAL: FaultServer._informational,
    Behaviour.UPGRADE: FaultServer._upgrade,
    Behaviour.CUT_GZIP: FaultServer._cut_gzip,
    Behaviour.CLOSE_AFTER_ANSWER: FaultServer._close_after_answer,
    Behaviour.TRICKLE_IN_TIME: FaultServer._trickle_in_time,
    Behaviour.ECHO: FaultServer._echo,
    Behaviour.SLOW: FaultServer._slow,
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


async def _next_target(reader: asyncio.StreamReader) -> bytes:
    """The target of the connection's next request; empty once the client has gone.

    A request body announced by Content-Length is read and dropped, so the
    next request on a keep-alive connection starts where it should.
    """
    try:
        head = await _read_request_head(reader)
    except asyncio.IncompleteReadError:
        return b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))
    return _target(head)


def _target(head: bytes) -> bytes:
    """``/call/17`` from ``GET /call/17 HTTP/1.1``."""
    return head.split(b" ", 2)[1]


def _answer(body: bytes) -> bytes:
    """A keep-alive 200 carrying ``body``."""
    length = str(len(body)).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + length
        + b"\r\n\r\n"
        + body
    )


async def _drain_until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop whatever comes until the client closes its end."""
    while await reader.read(4096):
        pass


async def _send_then_stall(
    sent: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read the request, send ``sent``, then wait (silently) for the client to leave."""
    await _read_request_head(reader)
    writer.write(sent)
    await writer.drain()
    await _drain_until_eof(reader)


async def _send_then_close(
    sent: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read the request, send ``sent``, then close cleanly (FIN)."""
    await _read_request_head(reader)
    writer.write(sent)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _base_url(address: tuple[str, int]) -> str:
    host, port = address[:2]
    return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def fault_server(
    *,
    trickle_interval: float = DEFAULT_TRICKLE_INTERVAL,
    fast_trickle_interval: float = DEFAULT_FAST_TRICKLE_INTERVAL,
    slow_delay: float = DEFAULT_SLOW_DELAY,
    close_delay: float = DEFAULT_CLOSE_DELAY,
) -> AsyncIterator[FaultServer]:
    """``async with fault_server() as faults: faults.url(Fault.HANG)``."""
    server = FaultServer(
        trickle_interval=trickle_interval,
        fast_trickle_interval=fast_trickle_interval,
        slow_delay=slow_delay,
        close_delay=close_delay,
    )
    async with server:
        yield server


@pytest.fixture(name="faults")
async def faults_fixture() -> AsyncIterator[FaultServer]:
    """A running :class:`FaultServer` for one test (default trickle interval)."""
    async with fault_server() as server:
        yield server
