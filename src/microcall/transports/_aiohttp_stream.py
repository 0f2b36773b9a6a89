"""A streamed response body on the aiohttp transport: ``ClientResponse.content`` read as it arrives.

aiohttp already reads a response's body lazily: its parser feeds a
``StreamReader`` and pauses the socket when the reader holds too much. So a
streamed body is that reader's ``readany()`` (everything buffered, or the
next bytes), and letting go is ``release()``: aiohttp puts the connection
back in its pool when the body was read to its end, and closes it otherwise
(``ResponseHandler.should_close``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import aiohttp

# ``map_error`` bound to the request: a failure's microcall error, or None.
ErrorMap = Callable[[Exception], Exception | None]


class AiohttpBody:
    """The rest of ``raw``'s body (a ``microcall._stream.BodySource``)."""

    __slots__ = ("__weakref__", "_errors", "_open", "_raw")

    def __init__(
        self,
        raw: aiohttp.ClientResponse,
        errors: ErrorMap,
        open_streams: weakref.WeakSet[AiohttpBody],
    ) -> None:
        self._raw = raw
        self._errors = errors
        # The transport's streams not yet ended, this one among them until it ends.
        self._open = open_streams
        open_streams.add(self)

    async def read(self) -> bytes:
        """What has arrived since the last read (waiting for some); ``b""`` at the end."""
        raw = self._raw
        try:
            piece = await raw.content.readany()
        except Exception as error:
            self.cut()
            if type(error) is RuntimeError:
                # aiohttp's reader raises a bare RuntimeError("Connection
                # closed.") once its connection is gone (its session closed).
                error = aiohttp.ClientConnectionError(str(error))
            mapped = self._errors(error)
            if mapped is None:
                raise
            raise mapped from error
        if not piece:
            self.close()  # aiohttp has released it already at the end; this makes sure
        return piece

    def close(self) -> None:
        """Kept in the pool if the body had been read to its end, else closed."""
        self._open.discard(self)
        self._raw.release()

    async def aclose(self) -> None:
        self.close()

    def cut(self) -> None:
        """Close the connection whatever has arrived (a reader waiting on it wakes)."""
        self._open.discard(self)
        self._raw.close()
