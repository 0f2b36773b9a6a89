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

import zlib
from collections.abc import Mapping

import httptools
from yarl import URL

from microcall._body import Body
from microcall._request import Request
from microcall._response import HeaderLines, Response, split_header_lines

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

    The head is read from its bytes once llhttp has accepted it, not header
    by header through llhttp's callbacks: a callback per name and value
    costs more than splitting the whole head once, and llhttp has already
    held it to the grammar (CRLF line ends, no folded lines, no space
    before a colon), so splitting on CRLF and the first colon is exact.
    """

    __slots__ = (
        "_body",
        "_cap",
        "_head",
        "_head_bytes",
        "_head_only",
        "_headers",
        "_interim",
        "_keep_alive",
        "_parser",
        "_size",
        "_until_close",
        "complete",
        "content_encoding",
        "extra",
        "head_done",
        "header_lines",
        "pending",
        "reason",
        "received",
        "status",
        "streaming",
    )

    def __init__(self, head_only: bool, cap: int | None, *, stream: bool = False) -> None:
        # The parser holds this reader's callbacks and the reader the parser:
        # a cycle, broken as soon as the message is over (see ``_finish``),
        # so that a response is freed by reference counting, not left to the
        # cyclic garbage collector, whose passes cost more than the parsing.
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head_only = head_only  # a HEAD request: the answer has no body
        self._cap = cap
        self._body: list[bytes] = []
        self._head: list[bytes] = []  # the bytes fed until the head was complete
        self._interim = 0  # 1xx heads read before the answer's
        self._size = 0
        self._head_bytes = 0
        self._keep_alive = False
        self._until_close = False
        self.status = 0
        self.reason = ""
        self.header_lines = ""  # the head after its status line, lines split by CRLF
        self._headers: list[tuple[str, str]] | None = None  # parsed when first read
        self.content_encoding = ""  # lower case, as the server named it
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
        parser = self._parser
        if self.complete or parser is None:  # over, or failed: nothing more belongs to it
            self.extra = True
            return
        self.received = True
        if not self.head_done:
            self._head_bytes += len(data)
            self._head.append(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            self._parser = None
            cause = error.__context__
            if isinstance(cause, (TooLarge, WireError)):
                raise cause from None
            raise WireError(str(error)) from error
        except httptools.HttpParserUpgrade:
            # Not an HttpParserError: llhttp stops at a 101 (or a 2xx with
            # "Connection: upgrade") to hand the socket to another protocol.
            # microcall asks for no upgrade, so what follows is not HTTP.
            self._parser = None
            raise WireError("the server switched protocols, though none was asked for") from None
        except httptools.HttpParserError as error:
            if self._ended():  # the bytes after the message were not HTTP either
                self.extra = True
                return
            self._parser = None
            raise WireError(str(error) or type(error).__name__) from error
        if not self.head_done and self._head_bytes > MAX_HEAD:
            raise WireError(f"the response head is longer than {MAX_HEAD} bytes")

    def eof(self) -> bool:
        """The connection ended: whether that completes the message (a body read to the close)."""
        if self.head_done and self._until_close and not self.complete:
            self.complete = True
            self._keep_alive = False
            self._parser = None
        return self.complete

    # llhttp's callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        assert self._parser is not None  # llhttp calls back only from feed
        status = self._parser.get_status_code()
        if status < 200:
            # A 1xx answer: llhttp ends it with its head; the real one follows.
            self._interim += 1
            return
        self.status = status
        self.head_done = True
        self._read_head()
        if self._head_only or status in NO_BODY_STATUSES:
            self._finish(head_only=True)

    def _read_head(self) -> None:
        """The reason and the header lines, from the head's bytes; the body's framing, checked against ``cap``.

        The lines are split into names and values only when someone reads
        them (``headers``): most answers are read for their status and body.
        """
        chunks = self._head
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._head = []
        start = 0
        for _ in range(self._interim):  # 1xx heads have no body: skip them whole
            start = data.index(b"\r\n\r\n", start) + 4
        text = data[start : data.index(b"\r\n\r\n", start)].decode("latin-1")
        status_line, _, self.header_lines = text.partition("\r\n")
        self.reason = status_line.split(" ", 2)[2] if status_line.count(" ") >= 2 else ""
        # One lower-cased copy answers the few questions the reader has.
        lowered = text.lower()
        chunked = "\r\ntransfer-encoding:" in lowered and "chunked" in self._field(
            "transfer-encoding"
        )
        length: int | None = None
        found = lowered.find("\r\ncontent-length:")
        if found >= 0:
            if lowered.find("\r\ncontent-length:", found + 2) < 0:  # the usual one line
                ends = lowered.find("\r\n", found + 2)
                declared = lowered[found + 17 : ends if ends >= 0 else None].strip(" \t")
            else:
                declared = self._field("content-length")
            length = int(declared) if declared.isdigit() else None
        if "\r\ncontent-encoding:" in lowered:
            self.content_encoding = self._field("content-encoding")
        self._until_close = length is None and not chunked
        if length is not None and self._cap is not None and length > self._cap:
            raise TooLarge(self._cap, length)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The head's headers, as ``(name, value)`` in the order they came."""
        headers = self._headers
        if headers is None:
            headers = self._headers = split_header_lines(self.header_lines)
        return headers

    def _field(self, name: str) -> str:
        """The last value of header ``name`` (lower case), lower-cased; "" if absent."""
        for key, value in reversed(self.headers):
            if key.lower() == name:
                return value.lower()
        return ""

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

    def _finish(self, head_only: bool = False) -> None:
        self.complete = True
        assert self._parser is not None
        keep_alive = self._parser.should_keep_alive()
        if head_only and keep_alive:
            # should_keep_alive() reads the parser's state: for a message that
            # ends with its head (HEAD, 204, 304) it is read before llhttp
            # finished it, so the Connection header is checked here as well.
            keep_alive = "close" not in self._field("connection")
        self._keep_alive = keep_alive
        self._parser = None  # the cycle's end (see __init__); feed_data holds it till it returns


def decoded(reader: ResponseReader, cap: int | None) -> bytes:
    """The body, decompressed if the server compressed it (gzip or deflate), within ``cap``."""
    body = reader.body()
    encoding = reader.content_encoding
    if not body or encoding not in ("gzip", "deflate", "x-gzip"):
        return body
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    limit = 0 if cap is None else cap + 1
    content = decompressor.decompress(body, limit)
    if cap is not None and (len(content) > cap or decompressor.unconsumed_tail):
        raise TooLarge(cap, None)
    content += decompressor.flush()
    check_ended(decompressor)
    return content


def check_ended(decompressor: zlib._Decompress) -> None:
    """Raise EOFError (a ProtocolError to the caller) if the compressed stream stopped short.

    The framing can be whole while the stream inside it is cut (a server
    that compressed into a buffer it sent too soon): what it gave is a
    prefix, and a prefix passed off as the body is data lost unseen.
    """
    if not decompressor.eof:
        raise EOFError("the compressed body stops before the end of its stream")


def whole_response(request: Request, url: URL, reader: ResponseReader, cap: int | None) -> Response:
    """The Response of a whole message read by ``reader`` (its body decoded, within ``cap``)."""
    return Response(
        status_code=reader.status,
        headers=HeaderLines(reader.header_lines),
        content=decoded(reader, cap),
        url=url,
        request=request,
        reason=reader.reason,
    )
