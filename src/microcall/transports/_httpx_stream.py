"""A streamed response body on the httpx transport: ``Response.aiter_bytes()`` read as it arrives.

httpx decodes the body (gzip, deflate, brotli, zstd) as it iterates, and
releases the connection itself when the iteration reaches the end. Letting
go earlier is ``Response.aclose()``, a coroutine (httpcore closes an
HTTP/1.1 connection caught mid-body, and drops an HTTP/2 stream): from
synchronous code (the engine discarding a loser) it is started as a task,
held here until it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx

# ``map_error`` bound to the request: a failure's microcall error, or None.
ErrorMap = Callable[[Exception], Exception | None]

# Closes started from synchronous code, kept until they finish (the loop holds tasks weakly).
_closing: set[asyncio.Task[None]] = set()


class HttpxBody:
    """The rest of ``raw``'s body (a ``microcall._stream.BodySource``)."""

    __slots__ = ("_errors", "_pieces", "_raw")

    def __init__(self, raw: httpx.Response, errors: ErrorMap) -> None:
        self._raw = raw
        self._errors = errors
        self._pieces: AsyncIterator[bytes] = raw.aiter_bytes()

    async def read(self) -> bytes:
        """The next decoded piece (waiting for it); ``b""`` at the end."""
        try:
            return await anext(self._pieces, b"")
        except Exception as error:
            self.close()
            mapped = self._errors(error)
            if mapped is None:
                raise
            raise mapped from error

    def close(self) -> None:
        """Let go now: the close runs as a task (a no-op when httpx has closed the response)."""
        if self._raw.is_closed:
            return
        task = asyncio.get_running_loop().create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def aclose(self) -> None:
        try:
            # The iterator first, so no generator is left suspended for the
            # loop to finalise later (it was finished already if a read failed).
            closing = getattr(self._pieces, "aclose", None)
            if closing is not None:
                with contextlib.suppress(RuntimeError):  # a read of it is in progress
                    await closing()
        finally:
            await self._raw.aclose()
