"""A streamed response body on one of the HTTP/1.1 transport's connections.

Theory of operation. For a streamed request the connection hands the
response over at its head and keeps its ``ResponseReader`` (``_h1_conn``):
the body's bytes go on collecting there as they arrive, the socket paused
while a megabyte waits. :class:`H1Body` is the other end: each ``read``
takes what has collected (all of it, in one piece), or waits for the next
bytes. Once the message is complete the connection goes back to the pool
(reusable if the server kept it alive), before the last piece is handed on;
a body closed before that closes the connection, since HTTP/1.1 has no
other way to abandon a response. A gzip or deflate body is decoded piece by
piece, as ``h1._decoded`` does whole.

The connection stays in the pool's ``streaming`` set while the body holds
it, so a pool that closes (its client closing, its loop ending) closes it.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Callable

from microcall.transports._h1_conn import H1Connection
from microcall.transports._h1_pool import Pool
from microcall.transports._h1_wire import ResponseReader, check_ended

# ``map_error`` bound to the request: a failure's microcall error, or None.
ErrorMap = Callable[[BaseException], Exception | None]


def body_decoder(headers: list[tuple[str, str]]) -> zlib._Decompress | None:
    """A decompressor for a gzip or deflate body (None: the body is sent as it is)."""
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "")
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    return None


def _give_back(pool: Pool, conn: H1Connection, reusable: bool) -> None:
    """The stream is done with ``conn``: back to the pool if ``reusable``, else closed."""
    conn.detach()
    pool.streaming.discard(conn)
    pool.release(conn, reusable)


class H1Body:
    """The rest of a response on ``conn``, read as it arrives (a ``microcall._stream.BodySource``)."""

    __slots__ = ("_conn", "_decoder", "_errors", "_pool", "_reader")

    def __init__(
        self, pool: Pool, conn: H1Connection, reader: ResponseReader, errors: ErrorMap
    ) -> None:
        self._pool = pool
        self._conn: H1Connection | None = conn
        self._reader = reader
        self._errors = errors
        self._decoder = body_decoder(reader.headers)
        pool.streaming.add(conn)

    async def read(self) -> bytes:
        """The body bytes that arrived since the last read (waiting for some); ``b""`` at the end."""
        try:
            return await self._read()
        except Exception as error:
            self._let_go(False)
            mapped = self._errors(error)
            if mapped is None:
                raise
            raise mapped from error

    async def _read(self) -> bytes:
        reader = self._reader
        decoder = self._decoder
        while (conn := self._conn) is not None:
            piece = reader.take()
            if reader.complete:  # the pool gets the connection back before the last piece goes
                self._let_go(reader.reusable)
                if decoder is not None:
                    piece = decoder.decompress(piece) + decoder.flush()
                    check_ended(decoder)
                return piece
            if piece:
                conn.resume()
                if decoder is None:
                    return piece
                piece = decoder.decompress(piece)
                if piece:
                    return piece
                continue
            await conn.wait_body()
        return b""

    def close(self) -> None:
        """Stop: the connection is kept if the whole message had arrived, else closed."""
        reader = self._reader
        self._let_go(reader.complete and reader.reusable)

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        conn = self._conn
        if conn is None:
            return
        # Dropped unclosed (its stream was entered without ``async with`` and
        # never closed): its connection would hold a pool slot for ever, and
        # a pool of one would starve. Given back on its loop, closed, and said
        # (unless the connection had ended: the client closed, or the server).
        if not conn.lost:
            warnings.warn(
                "a streamed response was dropped without being read to its end or closed; "
                "use `async with client.stream(...)`",
                ResourceWarning,
                stacklevel=1,
            )
        with contextlib.suppress(RuntimeError):  # its loop has closed: so has the pool
            conn.loop.call_soon_threadsafe(_give_back, self._pool, conn, False)

    def _let_go(self, reusable: bool) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            _give_back(self._pool, conn, reusable)
