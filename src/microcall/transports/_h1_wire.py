"""HTTP/1.1 on the wire, without I/O: the request's bytes, and a response read from bytes fed in.

Theory of operation. ``request_head`` writes a request's head (the request
line and headers). ``ResponseReader`` is one response's state machine over
llhttp (httptools): bytes go in with ``feed``, and it says when the head is
complete, when the message is, and whether the connection may carry
another request. Nothing here touches a socket or an event loop, so it is
tested by feeding bytes (tests/transports/test_h1_wire.py, with hypothesis
cutting the bytes at every point).

llhttp frames the body (Content-Length, chunked, or to the end of the
connection) and skips ``1xx`` answers itself; the reader adds what the
parser cannot know:

- a response to HEAD, and ``204``/``304``, have no body whatever their
  headers say: the message ends with its head;
- a body framed by the end of the connection (HTTP/1.0 without a length)
  ends at ``eof()``;
- bytes past the end of the message (a Content-Length shorter than the body,
  a second answer nobody asked for) make the connection unusable: they
  must never be read as the answer to the next request;
- a head longer than ``MAX_HEAD`` bytes is a protocol error (llhttp has no
  limit of its own; aiohttp's is 8 KiB per line);
- a body past ``cap`` bytes fails as soon as it passes it.

A streamed response (``stream=True``) is the same machine with another
reader at the end: the head is handed over as soon as it is complete, and
the body's pieces wait in the reader until ``take()`` hands them on
(``pending`` counts their bytes, for the connection's back-pressure).
"""

from __future__ import annotations

from collections.abc import Mapping

import httptools

from microcall._body import Body

# The longest response head read (status line and headers together).
MAX_HEAD = 64 * 1024

NO_BODY_STATUSES = frozenset({204, 304})


class WireError(Exception):
    """Bytes that are not an acceptable HTTP/1.1 response."""


class TooLarge(Exception):
    """The body passed ``cap`` bytes; ``declared`` is the Content-Length that said so, if any."""

    def __init__(self, cap: int, declared: int | None) -> None:
        super().__init__(cap, declared)
        self.cap = cap
        self.declared = declared


def request_head(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | Body | None
) -> bytes:
    """The request line and headers, ending with the blank line.

    ``Host`` is ``host`` unless ``headers`` name one; a body, or a method
    that expects one, gets its ``Content-Length``, except a streamed body of
    unknown length, which goes ``Transfer-Encoding: chunked``. Header names
    and values were checked when the request was built (no CR, LF or NUL).
    """
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    for name, value in headers.items():
        lower = name.lower()
        if lower == "host":
            has_host = True
        elif lower in ("content-length", "transfer-encoding"):
            continue  # the body's framing is the transport's
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {host}")
    if isinstance(body, Body):
        if body.length is None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {body.length}")
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class ResponseReader:
    """One response, read from the bytes of a connection (see the module's theory).

    After ``feed`` or ``eof``: ``complete`` says the message ended,
    ``reusable`` whether the connection may carry another request, and
    ``status``, ``reason``, ``headers`` and ``body()`` hold the answer.
    ``feed`` raises ``WireError`` for bytes that are not HTTP and
    ``TooLarge`` past ``cap``; ``eof`` returns False when the connection
    ended before the message did.
    """

    __slots__ = (
        "_body",
        "_cap",
        "_head_bytes",
        "_head_only",
        "_keep_alive",
        "_parser",
        "_size",
        "_until_close",
        "complete",
        "extra",
        "head_done",
        "headers",
        "pending",
        "reason",
        "received",
        "status",
        "streaming",
    )

    def __init__(self, head_only: bool, cap: int | None, *, stream: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only  # a HEAD request: the answer has no body
        self._cap = cap
        self._body: list[bytes] = []
        self._size = 0
        self._head_bytes = 0
        self._keep_alive = False
        self._until_close = False
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.head_done = False
        self.complete = False
        self.extra = False  # bytes arrived past the end of the message
        self.received = False  # any byte of a response arrived
        self.streaming = stream  # the head is handed over first, the body as it comes
        self.pending = 0  # body bytes not taken yet (streaming)

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry the next request."""
        return self.complete and self._keep_alive and not self.extra

    @property
    def ready(self) -> bool:
        """Whether the sender has something to pick up: the whole message, or a streamed head."""
        return self.complete or (self.streaming and self.head_done)

    def take(self) -> bytes:
        """The body bytes that arrived since the last ``take`` (streaming)."""
        body = self._body
        if not body:
            return b""
        self._body = []
        self.pending = 0
        return body[0] if len(body) == 1 else b"".join(body)

    def body(self) -> bytes:
        """The body read so far (all of it once ``complete``)."""
        body = self._body
        if len(body) == 1:
            return body[0]
        return b"".join(body)

    def feed(self, data: bytes) -> None:
        """Parse ``data``, the next bytes of the connection."""
        if not data:
            return
        if self.complete:
            self.extra = True
            return
        self.received = True
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, (TooLarge, WireError)):
                raise cause from None
            raise WireError(str(error)) from error
        except httptools.HttpParserError as error:
            if self._ended():  # the bytes after the message were not HTTP either
                self.extra = True
                return
            raise WireError(str(error) or type(error).__name__) from error
        if not self.head_done and self._head_bytes > MAX_HEAD:
            raise WireError(f"the response head is longer than {MAX_HEAD} bytes")

    def eof(self) -> bool:
        """The connection ended: whether that completes the message (a body read to the close)."""
        if self.head_done and self._until_close and not self.complete:
            self.complete = True
            self._keep_alive = False
        return self.complete

    # llhttp's callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_status(self, reason: bytes) -> None:
        if not self.complete:
            self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self._parser.get_status_code()
        if status < 200:
            # A 1xx answer: llhttp ends it with its head; the real one follows.
            self.headers = []
            self.reason = ""
            self._head_bytes = 0
            return
        self.status = status
        self.head_done = True
        length: int | None = None
        chunked = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length" and value.isdigit():
                length = int(value)
            elif lower == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if self._head_only or status in NO_BODY_STATUSES:
            self._finish()
            return
        self._until_close = length is None and not chunked
        if length is not None and self._cap is not None and length > self._cap:
            raise TooLarge(self._cap, length)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._size += len(body)
        if self._cap is not None and self._size > self._cap:
            raise TooLarge(self._cap, None)
        self._body.append(body)
        self.pending += len(body)

    def on_message_complete(self) -> None:
        if self.complete or not self.head_done:
            return  # the end of a 1xx answer, or bytes past this message
        self._finish()

    def _ended(self) -> bool:
        # A method, not the attribute: the callbacks may have set it during feed.
        return self.complete

    def _finish(self) -> None:
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive() and not self._head_only_close()

    def _head_only_close(self) -> bool:
        # should_keep_alive() reads the parser's state: for a message that ends
        # with its head (HEAD, 204, 304) it is read before llhttp finished it,
        # so the Connection header is checked here as well.
        return any(
            name.lower() == "connection" and "close" in value.lower()
            for name, value in self.headers
        )
