"""Streamed responses: the head at once, the body read as it arrives (``client.stream(...)``).

Theory of operation. A call made with ``Request.stream`` set asks its
transport to return as soon as the response's head has arrived. The
transport hands back an :class:`AsyncStreamResponse` holding a
:class:`BodySource`: the rest of the body, still on the connection. To the
engine it is a response like any other: classified on its status and
headers, retried, hedged, recorded. Nothing is retried or hedged after that:
once the engine returns it, the call has its answer, and the body is the
caller's to read.

Responses the engine does not return must let go of their connection
at once, or a pool could run dry while the call goes on (a retried 503
holding the only connection its retry needs). The engine calls
:func:`discard` for them, three places:

- when a further attempt goes out, on every answer received before it: a
  plan never returns an answer once a later attempt was sent (the later
  one's outcome supersedes it: see ``policy/strategy.py``);
- when the call ends, on every answer but the winner;
- on a losing hedge that finishes after the call ended.

A discarded source closes its connection, or gives it back to the pool if
the whole body had already arrived (a small 503's usually has: the
transports then release it even before the engine sees it).

The body's time. The front door sets the body's deadline and idle limit
(``_limit_body``); every read runs under the nearer of the two, and past
either the connection is closed and the read raises ``DeadlineExceeded`` or
``IdleTimeout``. A connection cut mid-body raises ``ReadError``. Each such
error carries the call's request and attempts.

The end of the call. Observers hear a streamed call end when its stream
ends: the body read to the end, a read that failed, or the stream closed
(the ``async with`` block's exit): :func:`end_call` defers the engine's
``call_ended`` until then. A stream that failed reports its error; one
closed because its block was cancelled reports the cancellation; otherwise
the response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from functools import partial
from typing import Protocol

from yarl import URL

from microcall._call_watch import CallWatch
from microcall._lines import LineSplitter, LineTooLong, Rechunker
from microcall._request import Request
from microcall._response import Response
from microcall._sse import EventDecoder, ServerSentEvent
from microcall.errors import (
    CallError,
    ClientClosed,
    DeadlineExceeded,
    IdleTimeout,
    ResponseTooLarge,
    UsageError,
)


class BodySource(Protocol):
    """A transport's open response body: the one seam between a transport and a streamed response.

    ``read`` returns the next piece of the (decoded) body, as much as has
    arrived, and ``b""`` once the body has ended (the connection is back in
    its pool by then); it raises one of microcall's TransportErrors. It is
    only ever awaited by one task at a time. ``close`` stops at once, from
    synchronous code: the connection goes back to the pool if the whole body
    had arrived, else it is closed (a transport that must await to close
    schedules it). ``aclose`` does the same and waits. Both may be called
    again, and after the end.
    """

    async def read(self) -> bytes: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class BufferedBody:
    """A body already in memory, as a source: for a transport that does not stream."""

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def read(self) -> bytes:
        content, self._content = self._content, b""
        return content

    def close(self) -> None:
        self._content = b""

    async def aclose(self) -> None:
        self._content = b""


class AsyncStreamResponse(Response):
    """A response whose body is read as it arrives: what ``AsyncClient.stream`` yields.

    ::

        async with client.stream("GET", "/export", idle_timeout=5.0) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                sink.write(chunk)

    Status, reason and headers are there at once; ``attempts`` lists the
    attempts made to get them. Read the body once, with one of
    :meth:`aiter_bytes`, :meth:`aiter_lines`, :meth:`aiter_sse` or
    :meth:`aread` (after ``aread()``, ``content``, ``text`` and ``json()``
    work as on any Response, and the iterators replay it; before, ``content``
    raises UsageError). The connection goes back to the pool when the body
    was read to its end, and is closed when the block ends before that.

    A read that runs past the call's deadline raises ``DeadlineExceeded``,
    one that waited longer than ``idle_timeout`` ``IdleTimeout``, and a
    connection cut mid-body ``ReadError``; nothing is retried once the head
    was handed over. ``elapsed`` covers the head until the stream ends, then
    the whole exchange.
    """

    __slots__ = (
        "_body_label",
        "_client_closed",
        "_content",
        "_deadline",
        "_error",
        "_head_at",
        "_idle",
        "_iterated",
        "_loop",
        "_max_read",
        "_reading",
        "_source",
        "_watch",
        "_whole",
    )

    def __init__(
        self,
        *,
        status_code: int,
        headers: Mapping[str, str],
        url: URL,
        request: Request,
        source: BodySource,
        reason: str = "",
        max_read: int | None = None,
    ) -> None:
        super().__init__(
            status_code=status_code,
            headers=headers,
            content=b"",
            url=url,
            request=request,
            reason=reason,
        )
        self._content: bytes | None = None
        self._source: BodySource | None = source
        self._watch: CallWatch | None = None
        self._deadline: float | None = None  # on the loop's clock
        self._idle: float | None = None
        self._body_label = ""  # what the deadline is, for its error
        self._head_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None  # the one its body is read on
        # Whether the client that made the call was closed (the front door's):
        # its pool closing cuts the body, which is not the server's doing.
        self._client_closed: Callable[[], bool] | None = None
        self._error: BaseException | None = None
        self._iterated = False  # pieces were handed out: the body cannot be read again
        self._reading = False
        self._whole = False  # the body was read to its end
        # What aread() may hold (Limits.max_response_size): iterating is
        # unbounded, as a stream's point is not to hold the body, but a
        # body read into memory is capped as a buffered call's is.
        self._max_read = max_read

    @classmethod
    def of(cls, response: Response) -> AsyncStreamResponse:
        """``response`` as a stream: itself, or a fully read one over its own body."""
        if isinstance(response, AsyncStreamResponse):
            return response
        stream = cls(
            status_code=response.status_code,
            headers=response.headers,
            url=response.url,
            request=response.request,
            source=BufferedBody(response.content),
            reason=response.reason,
        )
        stream.attempts = response.attempts
        stream.elapsed = response.elapsed
        stream.cache_status = response.cache_status
        return stream

    # ------------------------------------------------------------ the body, once read

    @property
    def content(self) -> bytes:
        """The body, once :meth:`aread` has read it; UsageError before."""
        content = self._content
        if content is None:
            raise UsageError(
                "content, text and json() of a streamed response need its body read first: "
                "aread() (read() on a blocking one)"
            )
        return content

    @content.setter
    def content(self, value: bytes) -> None:
        self._content = value

    @property
    def is_closed(self) -> bool:
        """True once the stream ended: read to its end, failed, or closed."""
        return self._source is None

    # ------------------------------------------------------------ reading

    async def aread(self) -> bytes:
        """Read the rest of the body into memory and return it (then ``content`` holds it)."""
        if self._content is not None:
            return self._content
        if self._iterated:
            raise UsageError("part of this body was already iterated; aread() needs all of it")
        pieces: list[bytes] = []
        held, cap = 0, self._max_read
        while piece := await self._next_piece():
            held += len(piece)
            if cap is not None and held > cap and self._source is not None:
                error = ResponseTooLarge(
                    f"the response from {self.request.endpoint} is larger than "
                    f"max_response_size ({cap} bytes) allows for aread(); iterate it with "
                    "aiter_bytes(), or raise Limits.max_response_size (None: no cap)",
                    request=self.request,
                    attempts=self.attempts,
                )
                self._stop(self._source, error)
                raise error
            pieces.append(piece)
        content = self._content = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return content

    async def aiter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; with ``chunk_size``, in chunks of exactly that size.

        ``None`` hands each piece over as it came off the network (its size
        is the network's); the last chunk of a sized iteration may be shorter.
        """
        chunker = chunker_for(chunk_size)
        async for piece in self._pieces():
            if chunker is None:
                yield piece
            else:
                for chunk in chunker.feed(piece):
                    yield chunk
        if chunker is not None and (rest := chunker.flush()):
            yield rest

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body as lines of text (decoded with :attr:`encoding`), without their line breaks.

        A line longer than ``max_response_size`` raises ResponseTooLarge
        (the stream is then closed), as ``aread()`` does for the whole body.
        """
        lines = LineSplitter(self.encoding, self._max_read)
        async for piece in self._pieces():
            try:
                found = lines.feed(piece)
            except LineTooLong as error:
                raise await self._too_long(error, "a line") from None
            for line in found:
                yield line
        for line in lines.flush():
            yield line

    async def aiter_sse(self) -> AsyncIterator[ServerSentEvent]:
        """The body as server-sent events (``text/event-stream``, read as EventSource does).

        An event larger than ``max_response_size`` raises ResponseTooLarge.
        """
        events = EventDecoder(self._max_read)
        async for piece in self._pieces():
            try:
                found = events.feed(piece)
            except LineTooLong as error:
                raise await self._too_long(error, "an event") from None
            for event in found:
                yield event
        for event in events.flush():
            yield event

    async def _too_long(self, error: LineTooLong, what: str) -> ResponseTooLarge:
        """The error for a line or event past the cap; the stream is closed (on its loop)."""
        refused = ResponseTooLarge(
            f"{what} of the response from {self.request.endpoint} is longer than "
            f"max_response_size ({error.limit}) allows; iterate it with aiter_bytes(), "
            "or raise Limits.max_response_size (None: no cap)",
            request=self.request,
            attempts=self.attempts,
        )
        if self._source is not None:
            self._stop(self._source, refused)
        return refused

    async def _pieces(self) -> AsyncIterator[bytes]:
        content = self._content
        if content is not None:  # read already: replay it
            if content:
                yield content
            return
        self._start_iterating()
        while piece := await self._next_piece():
            yield piece

    def _start_iterating(self) -> None:
        """Mark the body as handed out piece by piece (once only)."""
        if self._iterated:
            raise UsageError(
                "this body was already iterated; a stream is read once "
                "(call aread() first to iterate it more than once)"
            )
        self._iterated = True

    async def _next_piece(self) -> bytes:
        """The next piece of the body, under the body's deadline and idle limit; ``b""`` at its end."""
        source = self._source
        if source is None:
            if self._error is not None:
                raise self._error
            if self._whole:
                return b""
            raise UsageError("this stream is closed: its body can no longer be read")
        if self._reading:
            raise UsageError("another task is reading this stream already")
        self._reading = True
        try:
            piece = await self._timed(source)
        except CallError as error:
            if self._client_closed is not None and self._client_closed():
                closed = ClientClosed(
                    "the client was closed while this stream was open",
                    request=self.request,
                    attempts=self.attempts,
                )
                self._stop(source, closed)
                raise closed from error
            error.request = self.request
            error.attempts = self.attempts
            self._stop(source, error)
            raise
        except BaseException as stopped:
            # Cancelled (or a bug) mid-read: what was half-read cannot be
            # resumed, so the stream is over, and its connection closed.
            self._stop(source, stopped)
            raise
        finally:
            self._reading = False
        if not piece:
            self._source = None
            self._whole = True
            self._ended(None)
        return piece

    async def _timed(self, source: BodySource) -> bytes:
        deadline, idle = self._deadline, self._idle
        if deadline is None and idle is None:
            return await source.read()
        loop = asyncio.get_running_loop()
        at = deadline
        by_idle = False
        if idle is not None:
            quiet_at = loop.time() + idle
            if at is None or quiet_at < at:
                at, by_idle = quiet_at, True
        assert at is not None
        scope = asyncio.timeout_at(at)
        try:
            async with scope:
                return await source.read()
        except TimeoutError as error:
            if isinstance(error, CallError) or not scope.expired():
                raise
            raise self._timeout(by_idle) from None

    def _timeout(self, by_idle: bool) -> CallError:
        where = self.request.endpoint
        if by_idle:
            return IdleTimeout(f"no body bytes from {where} for {self._idle:g} s (idle_timeout)")
        return DeadlineExceeded(f"{self._body_label} passed while reading the body from {where}")

    # ------------------------------------------------------------ ending

    async def aclose(self) -> None:
        """Stop reading: the connection goes back to the pool if the body had ended, else it is closed."""
        await self._close_for(None)

    async def _close_for(self, block_error: BaseException | None) -> None:
        """Close as the ``async with`` block ends, with the exception it ended with (if any)."""
        source = self._source
        if source is None:
            return
        self._source = None
        try:
            await source.aclose()
        except BaseException:
            source.close()  # cancelled while closing: close without waiting
            raise
        finally:
            cancelled = isinstance(block_error, asyncio.CancelledError)
            self._ended(block_error if cancelled else None)

    def _discard(self) -> None:
        """The engine's: this answer is not the call's; let its connection go now (no observer hears)."""
        source = self._source
        if source is not None:
            self._source = None
            source.close()

    def _limit_body(
        self,
        deadline: float | None,
        idle: float | None,
        label: str,
        client_closed: Callable[[], bool] | None = None,
    ) -> None:
        """The front door's: the body's deadline (loop time; None: none) and idle limit (seconds).

        ``client_closed`` says whether the client was closed: a read its
        closing cut raises ClientClosed, not the ReadError of a server's cut.
        """
        self._client_closed = client_closed
        self._deadline = deadline
        self._idle = idle
        self._body_label = label
        loop = self._loop = asyncio.get_running_loop()
        self._head_at = loop.time()

    def _stop(self, source: BodySource, error: BaseException) -> None:
        self._source = None
        self._error = error if isinstance(error, CallError) else None
        source.close()
        self._ended(error)

    def _ended(self, error: BaseException | None) -> None:
        if self._head_at:
            self.elapsed += asyncio.get_running_loop().time() - self._head_at
            self._head_at = 0.0
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.call_ended(None if error is not None else self, error, self.attempts)

    def __del__(self) -> None:
        watch = self._watch
        if watch is None:
            return
        # Dropped before its stream ended (entered without ``async with`` and
        # never closed): its call ends now, as a call its caller gave up on,
        # so its span ends and the calls counted in flight come down. On its
        # own loop: the collector may run anywhere.
        ended = partial(
            watch.call_ended,
            None,
            asyncio.CancelledError("the stream was dropped unclosed"),
            self.attempts,
        )
        if self._loop is None:
            ended()
            return
        with contextlib.suppress(RuntimeError):  # its loop has closed
            self._loop.call_soon_threadsafe(ended)

    def __repr__(self) -> str:
        return f"<AsyncStreamResponse [{self.status_code}]>"


def chunker_for(chunk_size: int | None) -> Rechunker | None:
    if chunk_size is None:
        return None
    if type(chunk_size) is not int or chunk_size <= 0:
        raise UsageError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return Rechunker(chunk_size)


# ------------------------------------------------------------ the engine's few lines


def end_call(watch: CallWatch, response: Response) -> None:
    """Tell the observers the call ended, or, for a stream, defer that until the stream ends."""
    if type(response) is AsyncStreamResponse:
        response._watch = watch
    else:
        watch.call_ended(response, None, response.attempts)


def discard(outcome: object) -> None:
    """Let go of an answer the engine will not return (a no-op for anything but a stream)."""
    if type(outcome) is AsyncStreamResponse:
        outcome._discard()


def discard_all(outcomes: Iterable[object], keep: int | None = None) -> None:
    """:func:`discard` every outcome but the one at index ``keep``."""
    for index, outcome in enumerate(outcomes):
        if index != keep and type(outcome) is AsyncStreamResponse:
            outcome._discard()
