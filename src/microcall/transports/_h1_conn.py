"""One HTTP/1.1 connection as an asyncio protocol: a request goes out, its response comes back.

The protocol does no parsing of its own: it feeds what arrives to the
current request's ``ResponseReader`` and wakes the sender when the reader
has a whole message, an error, or the connection ended. A connection is
busy with at most one request; bytes that arrive while it is idle (a
server that answered twice, or closes with a word) make it unusable, and
it is closed.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from microcall.transports._h1_wire import ResponseReader, TooLarge, WireError
from microcall.transports._proxy import Proxy


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


class H1Connection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection; ``exchange`` sends a request and waits for its answer."""

    __slots__ = ("_reader", "_transport", "_waiter", "idle_since", "key", "lost", "used")

    def __init__(self, key: Origin) -> None:
        self.key = key
        self._transport: asyncio.Transport | None = None
        self._reader: ResponseReader | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.used = False  # it has carried a request already
        self.idle_since = 0.0

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
        if reader.complete:
            self._wake(None)

    def eof_received(self) -> bool | None:
        return None  # let asyncio close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        reader = self._reader
        if reader is None:
            return
        if reader.eof():
            self._wake(None)
        else:
            self._wake(ConnectionLost(exc, received=reader.received, written=True))

    def _wake(self, error: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
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
        return not self.lost and transport is not None and not transport.is_closing()

    async def exchange(self, head: bytes, body: bytes | None, reader: ResponseReader) -> None:
        """Write the request and wait until ``reader`` holds its whole response.

        Raises ``ConnectionLost``, ``WireError`` or ``TooLarge``. A
        cancellation (a timeout, a losing hedge) propagates; the caller then
        closes the connection, so the server sees the request abandoned.
        """
        transport = self._transport
        if transport is None or self.lost or transport.is_closing():
            raise ConnectionLost(None, received=False, written=False)
        self.used = True
        self._reader = reader
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            if body:
                transport.writelines((head, body))
            else:
                transport.write(head)
            await waiter
        finally:
            self._reader = None
            self._waiter = None

    def close(self) -> None:
        """Close the connection (a request in flight on it fails)."""
        self.lost = True
        if self._transport is not None:
            self._transport.close()
