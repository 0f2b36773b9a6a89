"""A streamed body cut differently, without I/O: into chunks of a chosen size, or into lines.

The body arrives in pieces whose boundaries are the network's, not the
content's: a line, a multi-byte character or a ``\\r\\n`` may be split
between two pieces. These small state machines take the pieces as they come
and give back whole chunks, lines, or characters; ``flush()`` hands over
what is left when the body ends. Both the asyncio and the blocking stream
responses use them, so the two cut a body the same way.

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (what the event-stream
format and ``str.splitlines`` agree on; ``splitlines`` also splits at form
feeds and Unicode separators, which a line-oriented protocol does not).
"""

from __future__ import annotations

import codecs
import re

# A line break: CRLF first, so it counts once.
_BREAK = re.compile(r"\r\n|\r|\n")


class Rechunker:
    """Pieces of a body in, chunks of exactly ``size`` bytes out (the last one may be shorter)."""

    __slots__ = ("_buffer", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buffer = bytearray()

    def feed(self, piece: bytes) -> list[bytes]:
        """The whole chunks that ``piece`` completes."""
        buffer = self._buffer
        size = self._size
        if not buffer and len(piece) == size:
            return [piece]  # the common case when sizes match: no copy
        buffer += piece
        if len(buffer) < size:
            return []
        whole = len(buffer) - len(buffer) % size
        chunks = [bytes(buffer[start : start + size]) for start in range(0, whole, size)]
        del buffer[:whole]
        return chunks

    def flush(self) -> bytes:
        """What is left once the body ended (empty when the body was a multiple of ``size``)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


class LineTooLong(Exception):
    """A line still without its break after more than ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class LineSplitter:
    """Pieces of a body in, its lines out (without their line breaks), decoded with ``encoding``.

    Bytes that do not decode are replaced (U+FFFD), as ``Response.text``
    does; an unknown encoding falls back to UTF-8.

    The start of a line waits for its break; with ``limit``, a line still
    unbroken past that many characters raises ``LineTooLong`` rather than
    growing without bound (a server sending one endless line). The waiting
    pieces are kept apart and joined once, when the break comes: a long line
    in many small pieces costs its length, not its length squared.
    """

    __slots__ = ("_decoder", "_held", "_limit", "_pending")

    def __init__(self, encoding: str = "utf-8", limit: int | None = None) -> None:
        try:
            factory = codecs.getincrementaldecoder(encoding)
        except LookupError:  # an unknown charset name from the network
            factory = codecs.getincrementaldecoder("utf-8")
        self._decoder = factory(errors="replace")
        self._limit = limit
        self._pending: list[str] = []  # the start of a line whose break has not arrived
        self._held = 0  # characters in _pending

    def feed(self, piece: bytes) -> list[str]:
        """The lines that ``piece`` completes."""
        return self._lines(self._decoder.decode(piece), final=False)

    def flush(self) -> list[str]:
        """The last line, if the body did not end with a line break."""
        return self._lines(self._decoder.decode(b"", final=True), final=True)

    def _lines(self, text: str, *, final: bool) -> list[str]:
        pending = self._pending
        if (
            not final
            and "\n" not in text
            and "\r" not in text
            and not (pending and pending[-1].endswith("\r"))  # a held "\r" ends its line
        ):
            self._hold(text)  # no line ends in this piece
            return []
        text = "".join(pending) + text if pending else text
        pending.clear()
        self._held = 0
        if not text:
            return []
        parts = _BREAK.split(text)
        # The last part has no break after it yet. A text ending in "\r" may
        # be half of a "\r\n": keep the "\r" until the next piece says.
        rest = parts.pop()
        if text.endswith("\r") and not final:
            rest = parts.pop() + "\r"
        if final:
            if rest:
                parts.append(rest)
            rest = ""
        self._hold(rest)
        return parts

    def _hold(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        self._held += len(text)
        if self._limit is not None and self._held > self._limit:
            raise LineTooLong(self._limit)
