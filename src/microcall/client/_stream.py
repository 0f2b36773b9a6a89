"""``client.stream(...)``: the front doors' side of streamed responses.

Theory of operation. ``AsyncClient.stream`` builds and checks the call as
``request`` does (the deadline starts then), with ``Request.stream`` set,
and returns an :class:`AsyncStreamCall`: entering it sends the call through
the engine (strategy, retries, hedges, the deadline header, observers, as for
any call, but never the response cache), sets the body's time limits, and
yields the :class:`~microcall._stream.AsyncStreamResponse`; leaving it
closes the stream whatever happened inside, so the connection goes back to
the pool (the body was read to its end) or is closed (it was not).

The body's time (:class:`BodyLimits`):

- by default the call's deadline (``timeout=`` / ``deadline=`` / the
  context's) covers the whole exchange: head and body;
- ``body_timeout=S`` gives the body its own S seconds from the head's
  arrival; the call's deadline then covers the head only (attempts,
  retries, hedges). ``math.inf`` leaves the body without a deadline, which
  is allowed only with an ``idle_timeout`` (a stream of events that lasts
  as long as the connection);
- ``idle_timeout=S`` bounds each wait for the body's next bytes.

The blocking ``Client.stream`` runs the same on the client's background
loop: :class:`StreamCall` opens the stream there and :class:`StreamResponse`
brings each piece of the body across to the caller's thread (one hand-off
per piece: a piece is whatever arrived since the last, up to the transport's
buffer, so a fast body crosses in large pieces).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import math
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from yarl import URL

from microcall._attempt import Attempt
from microcall._durations import Seconds, to_seconds
from microcall._lines import LineSplitter, LineTooLong
from microcall._request import Request
from microcall._sse import EventDecoder, ServerSentEvent
from microcall._stream import AsyncStreamResponse, chunker_for
from microcall.cache import CachePolicy
from microcall.client._in_flight import CallsInFlight, Send
from microcall.client._loop import BackgroundLoop
from microcall.errors import ClientClosed, ConfigurationError, UsageError
from microcall.policy.strategy import Strategy

T = TypeVar("T")

Opening = Callable[[], Coroutine[Any, Any, AsyncStreamResponse]]


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How long a streamed body may take: its own deadline (None: the call's) and the idle limit."""

    body_timeout: float | None
    idle_timeout: float | None

    @classmethod
    def of(cls, body_timeout: Seconds | None, idle_timeout: Seconds | None) -> BodyLimits:
        idle = None if idle_timeout is None else to_seconds(idle_timeout, name="idle_timeout")
        body: float | None = None
        if body_timeout is not None:
            if isinstance(body_timeout, float) and math.isinf(body_timeout) and body_timeout > 0:
                if idle is None:
                    raise ConfigurationError(
                        "body_timeout=math.inf needs an idle_timeout: "
                        "something must bound the wait for a body"
                    )
                body = math.inf
            else:
                body = to_seconds(body_timeout, name="body_timeout")
        return cls(body_timeout=body, idle_timeout=idle)


def refuse_unstreamable(options: Mapping[str, Any]) -> None:
    """Refuse call options that need the whole body before the call returns."""
    if options.get("response_model") is not None:
        raise UsageError(
            "stream() takes no response_model: read the body (aread()), then "
            "response.json(model=...)"
        )
    if isinstance(options.get("cache"), CachePolicy):
        raise UsageError("a streamed response is never cached: stream() takes no CachePolicy")


async def open_stream(
    in_flight: CallsInFlight,
    send: Send,
    now: Callable[[], float],
    request: Request,
    expires_at: float,
    priority: str | None,
    strategy: Strategy,
    limits: BodyLimits,
) -> AsyncStreamResponse:
    """Send a streamed call; its response at the head, with the body's time limits set."""
    answer = await in_flight.guard(send, request, expires_at, priority, strategy)
    # A transport that does not stream (a test's MockTransport, say) answers in full.
    response = AsyncStreamResponse.of(answer)
    loop_now = asyncio.get_running_loop().time()
    body_timeout = limits.body_timeout
    if body_timeout is None:
        deadline: float | None = loop_now + (expires_at - now())
        label = "the call's deadline"
    elif math.isinf(body_timeout):
        deadline, label = None, ""
    else:
        deadline, label = loop_now + body_timeout, f"body_timeout ({body_timeout:g} s)"
    response._limit_body(deadline, limits.idle_timeout, label, in_flight.was_stopped)
    return response


class AsyncStreamCall:
    """What ``AsyncClient.stream`` returns: ``async with`` it to send the call and read its body.

    Entering sends the call and yields an
    :class:`~microcall._stream.AsyncStreamResponse` once the head has
    arrived (or raises the call's CallError); leaving closes the stream.
    """

    __slots__ = ("_opening", "_response")

    def __init__(self, opening: Opening) -> None:
        self._opening: Opening | None = opening
        self._response: AsyncStreamResponse | None = None

    async def open(self) -> AsyncStreamResponse:
        """Send the call; its streamed response (once only)."""
        opening, self._opening = self._opening, None
        if opening is None:
            raise UsageError("a stream() call is entered once; make another for another call")
        response = self._response = await opening()
        return response

    async def __aenter__(self) -> AsyncStreamResponse:
        return await self.open()

    def __await__(self) -> NoReturn:
        # ``await client.stream(...)`` would leave nobody to close the
        # stream: say how it is used, rather than Python's "can't be awaited".
        raise UsageError(
            "client.stream(...) is not awaited: use it as "
            "`async with client.stream(...) as response:` (the block closes the stream)"
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response._close_for(exc)


# ------------------------------------------------------------ the blocking side


class StreamCall:
    """What ``Client.stream`` returns: ``with`` it to send the call and read its body."""

    __slots__ = ("_loop", "_opening", "_response")

    def __init__(self, loop: BackgroundLoop, opening: Opening) -> None:
        self._loop = loop
        self._opening: Opening | None = opening
        self._response: StreamResponse | None = None

    def __enter__(self) -> StreamResponse:
        opening, self._opening = self._opening, None
        if opening is None:
            raise UsageError("a stream() call is entered once; make another for another call")
        future = self._loop.submit(opening())
        try:
            inner = future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C), or the call failed: a
            # stream that still arrives must not stay open.
            future.cancel()
            future.add_done_callback(self._close_orphan)
            raise
        response = self._response = StreamResponse(inner, self._loop)
        return response

    def _close_orphan(self, future: cf.Future[AsyncStreamResponse]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        with contextlib.suppress(UsageError):  # the client closed: its pool closed the stream
            self._loop.submit(future.result().aclose())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()


class StreamResponse:
    """A response whose body is read as it arrives, from blocking code: what ``Client.stream`` yields.

    ::

        with client.stream("GET", "/export", idle_timeout=5.0) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                sink.write(chunk)

    The blocking twin of :class:`~microcall.AsyncStreamResponse`, with the
    same rules: status and headers at once, the body read once (with
    :meth:`iter_bytes`, :meth:`iter_lines`, :meth:`iter_sse` or :meth:`read`),
    the same time limits and errors. Use it from one thread at a time.
    """

    __slots__ = ("_inner", "_loop")

    def __init__(self, inner: AsyncStreamResponse, loop: BackgroundLoop) -> None:
        self._inner = inner
        self._loop = loop

    # the head, at once

    @property
    def status_code(self) -> int:
        return self._inner.status_code

    @property
    def reason(self) -> str:
        return self._inner.reason

    @property
    def headers(self) -> Mapping[str, str]:
        return self._inner.headers

    @property
    def url(self) -> URL:
        return self._inner.url

    @property
    def request(self) -> Request:
        return self._inner.request

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The attempts made to get the head (see ``Response.attempts``)."""
        return self._inner.attempts

    @property
    def elapsed(self) -> float:
        """Seconds from the call to its head; to the stream's end once it ended."""
        return self._inner.elapsed

    @property
    def ok(self) -> bool:
        """True for a status below 400."""
        return self._inner.ok

    @property
    def encoding(self) -> str:
        """The charset named by Content-Type, or utf-8."""
        return self._inner.encoding

    @property
    def is_closed(self) -> bool:
        """True once the stream ended: read to its end, failed, or closed."""
        return self._inner.is_closed

    def raise_for_status(self) -> StreamResponse:
        """Raise HTTPStatusError for a 4xx or 5xx status (before reading the body); return self."""
        self._inner.raise_for_status()
        return self

    # the body, once read

    @property
    def content(self) -> bytes:
        """The body, once :meth:`read` has read it; UsageError before."""
        return self._inner.content

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding`, once :meth:`read` has read it."""
        return self._inner.text

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (see ``Response.json``), once :meth:`read` has read it."""
        return self._inner.json(**kwargs)

    # reading

    def read(self) -> bytes:
        """Read the rest of the body into memory and return it (then ``content`` holds it)."""
        return self._run(self._inner.aread())

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body's bytes as they arrive; with ``chunk_size``, in chunks of exactly that size."""
        chunker = chunker_for(chunk_size)
        for piece in self._pieces():
            if chunker is None:
                yield piece
            else:
                yield from chunker.feed(piece)
        if chunker is not None and (rest := chunker.flush()):
            yield rest

    def iter_lines(self) -> Iterator[str]:
        """The body as lines of text (decoded with :attr:`encoding`), without their line breaks.

        A line longer than ``max_response_size`` raises ResponseTooLarge.
        """
        lines = LineSplitter(self.encoding, self._inner._max_read)
        for piece in self._pieces():
            try:
                found = lines.feed(piece)
            except LineTooLong as error:
                raise self._run(self._inner._too_long(error, "a line")) from None
            yield from found
        yield from lines.flush()

    def iter_sse(self) -> Iterator[ServerSentEvent]:
        """The body as server-sent events (``text/event-stream``, read as EventSource does).

        An event larger than ``max_response_size`` raises ResponseTooLarge.
        """
        events = EventDecoder(self._inner._max_read)
        for piece in self._pieces():
            try:
                found = events.feed(piece)
            except LineTooLong as error:
                raise self._run(self._inner._too_long(error, "an event")) from None
            yield from found
        yield from events.flush()

    def _pieces(self) -> Iterator[bytes]:
        inner = self._inner
        content = inner._content
        if content is not None:
            if content:
                yield content
            return
        inner._start_iterating()
        run = self._run
        while piece := run(inner._next_piece()):
            yield piece

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.run(coroutine)
        except UsageError:
            if not self._loop.closing:
                raise  # the stream's own refusal (read twice, say)
            # The client was closed with this stream open: for its reader,
            # a call closed mid-way, as a read already waiting is told.
            raise ClientClosed(
                "the Client was closed while this stream was open",
                request=self._inner.request,
                attempts=self._inner.attempts,
            ) from None

    def close(self) -> None:
        """Stop reading: the connection goes back to the pool if the body had ended, else it is closed."""
        with contextlib.suppress(UsageError):  # the client closed: its pool closed the stream
            self._loop.run(self._inner.aclose())

    def __repr__(self) -> str:
        return f"<StreamResponse [{self.status_code}]>"
