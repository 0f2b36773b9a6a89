"""A streamed response body on the aiohttp transport: ``ClientResponse.content`` read as it arrives.

aiohttp already reads a response's body lazily: its parser feeds a
``StreamReader`` and pauses the socket when the reader holds too much. So a
streamed body is that reader's ``readany()`` (everything buffered, or the
next bytes), and letting go is ``release()``: aiohttp puts the connection
back in its pool when the body was read to its end, and closes it otherwise
(``ResponseHandler.should_close``).
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

# ``map_error`` bound to the request: a failure's microcall error, or None.
ErrorMap = Callable[[Exception], Exception | None]


class AiohttpBody:
    """The rest of ``raw``'s body (a ``microcall._stream.BodySource``)."""

    __slots__ = ("_errors", "_raw")

    def __init__(self, raw: aiohttp.ClientResponse, errors: ErrorMap) -> None:
        self._raw = raw
        self._errors = errors

    async def read(self) -> bytes:
        """What has arrived since the last read (waiting for some); ``b""`` at the end."""
        raw = self._raw
        try:
            piece = await raw.content.readany()
        except Exception as error:
            raw.close()
            mapped = self._errors(error)
            if mapped is None:
                raise
            raise mapped from error
        if not piece:
            raw.release()  # aiohttp has done so already at the end; this makes sure
        return piece

    def close(self) -> None:
        """Kept in the pool if the body had been read to its end, else closed."""
        self._raw.release()

    async def aclose(self) -> None:
        self._raw.release()
