"""A streamed request body (``microcall._body``) as an aiohttp payload.

aiohttp writes a payload by calling its ``write_with_length``; every call is
a new pass over the body, from its beginning, so aiohttp's own re-sends of a
payload (a 307/308 redirect) read it again rather than send what is left.
A body read once fails such a second pass (``BodyReplayed``, which becomes
the same RedirectError as on the other transports), and says it is
``spent`` as soon as a chunk of it was taken, so that microcall's resend on
a fresh connection (``_aiohttp_resend``) leaves it alone. (``consumed``
stays False: aiohttp would otherwise refuse the redirect with an error of
its own, which reads like a broken response.)

``size`` is the body's length when known (aiohttp then writes
``Content-Length``), None otherwise (aiohttp sends it chunked).
"""

from __future__ import annotations

from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from microcall._body import Body, BodyFailed, BodySend, may_resend


class BodyPayload(Payload):
    """One attempt's body for aiohttp; ``failure`` is its source's failure, if one failed."""

    _autoclose = True  # the caller's file or iterator stays the caller's to close

    def __init__(self, body: Body, content_type: Any = None) -> None:
        super().__init__(body, content_type=content_type)
        self._send = BodySend(body)
        self._size = body.length

    @property
    def failure(self) -> BodyFailed | None:
        """What went wrong with the body's source during this attempt, if anything."""
        return self._send.failure

    def close_send(self) -> None:
        """The attempt ended: release what its passes hold (a thread reading a generator)."""
        self._send.close()

    @property
    def spent(self) -> bool:
        """Whether the body was read once already and cannot go again."""
        return not may_resend(self._value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # The body's own pass checks its length; content_length is that same length.
        async for chunk in self._send:
            await writer.write(chunk)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed body has no text until it is sent")
