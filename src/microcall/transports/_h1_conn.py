"""One HTTP/1.1 connection as an asyncio protocol: a request goes out, its response comes back.

The protocol does no parsing of its own: it feeds what arrives to the
current request's ``ResponseReader`` and wakes the sender when the reader
has a whole message, an error, or the connection ended. A connection is
busy with at most one request; bytes that arrive while it is idle (a
server that answered twice, or closes with a word) make it unusable, and
it is closed.

A streamed response keeps its reader on the connection after the head was
handed over: ``exchange`` returns at the head, and the body's reader
(``_h1_stream.H1Body``) waits for each further piece with ``wait_body``.
Reading from the socket pauses while more than ``PAUSE_AT`` bytes wait
to be taken, and resumes once they are (``resume``): a slow reader holds
that much of a body, never all of it. A failure that comes while nobody
waits (the server cut the body while the caller was busy) is kept for the
next ``wait_body``.

A streamed request body (``microcall._body``) goes out as its source gives
it, chunked when its length is unknown, and waits while asyncio has paused
writing (the socket's buffer is full), so a large upload holds a chunk or
two, not the file. An answer that comes before the whole body went (a 413)
stops the sending; the connection then carries nothing more. A connection
closed with request bytes still unsent is aborted, not left to flush to a
peer that may never read them.
"""

from __future__ import annotations

import asyncio
import select
from typing import NamedTuple, cast

from microcall._body import Body, BodySend, may_resend
from microcall._request import Request
from microcall.transports._h1_wire import ResponseReader, TooLarge, WireError
from microcall.transports._proxy import Proxy

# Body bytes a streamed response holds before the socket stops being read:
# four of asyncio's largest reads (256 KiB), so a reader that keeps up never
# pauses it, and a slow one holds a megabyte, not the body.
PAUSE_AT = 1024 * 1024


class Origin(NamedTuple):
    """Where a connection goes: the pool's key. ``name`` is the TLS server name, if not ``host``.

    ``proxy`` is the forward proxy the connection goes through (None: direct).
    """

    scheme: str
    host: str
    port: int
    name: str | None
    proxy: Proxy | None = None


class ConnectionLost(Exception):
    """The connection ended before the response did.

    ``received`` says whether any byte of a response had arrived; ``written``
    whether any byte of the request had been handed to the socket.
    """

    def __init__(self, cause: BaseException | None, *, received: bool, written: bool) -> None:
        super().__init__(str(cause) if cause else "the server closed the connection")
        self.cause = cause
        self.received = received
        self.written = written


def worth_resending(lost: ConnectionLost, request: Request, body: bytes | Body | None) -> bool:
    """Whether a request that met a dead reused connection may go again (see the module).

    A body read once goes again only if no chunk of it was taken.
    """
    if not may_resend(body):
        return False
    if not lost.written:
        return True  # not a byte of it left: the server never saw it
    return request.replayable and not lost.received


class H1Connection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection; ``exchange`` sends a request and waits for its answer."""

    __slots__ = (
        "_cut",
        "_failure",
        "_loop",
        "_paused",
        "_reader",
        "_transport",
        "_waiter",
        "_writable",
        "_write_paused",
        "idle_since",
        "key",
        "lost",
        "used",
    )

    def __init__(self, key: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        # The loop the connection lives on. Its futures are made there without
        # asking asyncio for the running loop, which costs a system call
        # (getpid, to notice a fork) on every ask.
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._reader: ResponseReader | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.used = False  # it has carried a request already
        self.idle_since = 0.0
        self._failure: BaseException | None = None  # a streamed body's, until it is waited for
        self._paused = False
        # Flow control of a streamed request body: asyncio pauses writing
        # when the socket's buffer is full; the sender waits on _writable.
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        # The answer came before the whole request body went: the request's
        # framing is cut, so the connection carries nothing after this answer.
        self._cut = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the connection lives on."""
        return self._loop

    # asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            self.close()  # nobody asked: the connection can no longer be trusted
            return
        try:
            reader.feed(data)
        except (WireError, TooLarge) as error:
            self._wake(error)
            return
        if reader.ready:
            self._wake(None)
            if reader.pending >= PAUSE_AT and not reader.complete and not self._paused:
                self._paused = True
                self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        return None  # let asyncio close the transport; connection_lost follows

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_writer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._release_writer()
        reader = self._reader
        if reader is None:
            return
        if reader.eof():
            self._wake(None)
        else:
            self._wake(ConnectionLost(exc, received=reader.received, written=True))

    def _wake(self, error: BaseException | None) -> None:
        self._release_writer()  # a body still being sent stops: the answer (or the end) came
        waiter = self._waiter
        if waiter is None or waiter.done():
            if error is not None and self._failure is None and self._reader is not None:
                self._failure = error  # a streamed body's: its reader picks it up
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    # the sender's side

    @property
    def usable(self) -> bool:
        """Whether the connection is open and may carry a request."""
        transport = self._transport
        return (
            not self.lost and not self._cut and transport is not None and not transport.is_closing()
        )

    def quiet(self) -> bool:
        """Whether nothing waits unread on the idle socket: no close, no stray bytes (one poll).

        The loop reads a socket a turn after it became readable: a server's
        close that came with its last answer is still unread when the next
        request takes the connection in the same turn. ``usable`` cannot see
        it yet; the socket can.
        """
        transport = self._transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            return True  # no socket to ask (a test's transport): as usable says
        poll = select.poll()
        try:
            poll.register(sock.fileno(), select.POLLIN)
            return not poll.poll(0)
        except (OSError, ValueError):  # closed under us
            return False

    def begin(
        self, head: bytes, body: bytes | None, reader: ResponseReader
    ) -> asyncio.Future[None]:
        """Write a request whose body is in hand (or absent); the future its answer resolves.

        The common exchange, without a coroutine of its own: the caller
        awaits the future, then calls :meth:`end` whatever came of it.
        Raises ``ConnectionLost`` when the connection can carry nothing.
        """
        transport = self._transport
        if transport is None or self.lost or transport.is_closing():
            raise ConnectionLost(None, received=False, written=False)
        self.used = True
        self._reader = reader
        waiter = self._waiter = self._loop.create_future()
        try:
            if body:
                transport.writelines((head, body))
            else:
                transport.write(head)
        except BaseException:
            self._reader = self._waiter = None
            raise
        return waiter

    def end(self, waiter: asyncio.Future[None], reader: ResponseReader, failed: bool) -> None:
        """The exchange ``begin`` started is over: it ``failed`` (raised or was cancelled), or not."""
        if waiter.done() and not waiter.cancelled():
            waiter.exception()  # retrieved, if the body's failure left it unawaited
        self._waiter = None
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            # Answered before the body in hand was all sent (a 413 from a
            # server that stopped reading): the next request would queue
            # behind the rest of it, or reach the server as its tail.
            self._cut = True
        if failed or reader.complete:
            self._reader = None
        # else: a streamed head; the reader stays for the body (``wait_body``)

    async def exchange(
        self, head: bytes, body: bytes | BodySend | None, reader: ResponseReader
    ) -> None:
        """Write the request and wait until ``reader`` holds its whole response.

        Raises ``ConnectionLost``, ``WireError`` or ``TooLarge``, and
        ``BodyFailed`` when a streamed request body's source fails. A
        cancellation (a timeout, a losing hedge) propagates; the caller then
        closes the connection, so the server sees the request abandoned.
        """
        if body is None or type(body) is bytes:
            waiter = self.begin(head, body, reader)
            try:
                await waiter
            except BaseException:
                self.end(waiter, reader, True)
                raise
            self.end(waiter, reader, False)
            return
        # A streamed body: the head first, then the body as its source gives
        # it. The body is closed however the exchange ends, even unsent.
        started: asyncio.Future[None] | None = None  # once the head is written
        failed = True
        try:
            waiter = started = self.begin(head, None, reader)
            transport = cast(asyncio.Transport, self._transport)  # begin found it open
            if not await self._send_body(transport, body, waiter):  # type: ignore[arg-type]
                self._cut = True
            await waiter
            failed = False
        finally:
            body.close()  # type: ignore[union-attr]
            if started is not None:
                self.end(started, reader, failed)

    # a streamed body

    async def wait_body(self) -> None:
        """Wait until the streamed body has more bytes, has ended, or failed (raised here)."""
        reader = self._reader
        failure = self._failure
        if failure is not None:
            self._failure = None
            raise failure
        if reader is None or reader.pending or reader.complete:
            return
        if self.lost:  # ended while nobody waited, and not as the message's end
            raise ConnectionLost(None, received=True, written=True)
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def resume(self) -> None:
        """The streamed body's bytes were taken: read the socket again if it was paused."""
        if self._paused:
            self._paused = False
            if self._transport is not None and not self.lost:
                self._transport.resume_reading()

    def detach(self) -> None:
        """The streamed body is done with the connection (it goes back to the pool, or closes)."""
        self._reader = None
        self._failure = None
        self.resume()

    # a streamed request body

    async def _send_body(
        self, transport: asyncio.Transport, body: BodySend, waiter: asyncio.Future[None]
    ) -> bool:
        """Write ``body`` as its source gives it, no faster than the socket takes it.

        A body of unknown length goes in chunked framing. Returns False if
        the answer came, or the connection ended, before all of it was written.
        """
        chunked = body.length is None
        chunks = aiter(body)
        while not waiter.done():
            chunk = await anext(chunks, None)
            if waiter.done() or transport.is_closing():
                return False
            if chunk is None:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                return True
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self._write_paused:
                writable = self._writable = self._loop.create_future()
                try:
                    await writable
                finally:
                    self._writable = None
        return False

    def _release_writer(self) -> None:
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def close(self) -> None:
        """Close the connection (a request in flight on it fails)."""
        self.lost = True
        transport = self._transport
        if transport is not None:
            if transport.get_write_buffer_size():
                # Bytes of a cut upload the peer has not taken: close() would
                # wait for them for ever if it never reads again.
                transport.abort()
            else:
                transport.close()
