"""Request bodies read while they are sent: files, iterators, async iterators, multipart.

Theory of operation. A body given as bytes (or text, JSON, a form) is held
whole and every attempt sends the same bytes. A body given as a *source* is
read chunk by chunk while it goes out, so memory stays flat whatever its
size. A :class:`Body` says what the transports need to know before a byte
is sent:

- ``length``: a file's size from its position to its end, or the caller's
  ``Content-Length``; None means the size is unknown and HTTP/1.1 frames the
  body with ``Transfer-Encoding: chunked``;
- ``replayable``: whether it can be read again from its beginning. A
  seekable file is (each pass reads from where the file stood when the call
  was made); an iterator, an async iterator, an async file and a pipe are
  read once.

Each send of a body (an attempt, the stale-connection resend, a 307 redirect)
is a :class:`BodySend`, an async iterable whose every iteration is one pass
from the beginning. A pass turns whatever the source does wrong into
``BodyFailed`` (recorded on the send, so a transport finds it however its
library wrapped the error): the source raised, it was closed, it gave
something that is not bytes, or more or fewer bytes than ``length``.

Where each kind is read, and why:

- a regular file (with a file descriptor): ``os.pread`` in the loop's
  default executor, at the pass's own offset. A read never moves the
  file's position, so passes that run at once (hedges) cannot disturb each
  other, and a disk that stalls never stalls the event loop (aiohttp reads
  files in the executor for the same reason).
- an in-memory file (``io.BytesIO``): ``seek`` then ``read``, on the loop.
- any other seekable file-like: ``seek`` then ``read`` in the executor.
  Those two steps are one, under a lock, so concurrent passes interleave
  whole reads only.
- a stream (a non-seekable file): ``read`` in the executor.
- a sync iterator: on a thread of its own that reads a bounded way ahead,
  since user code may block and may yield small pieces (``_pump`` says why
  an executor hop per item is too slow); the pieces that gathered go out
  together, up to a chunk.
- an async file or iterator is awaited on the loop.

A body read once is never read twice: the engine refuses a retry or hedge of
it (``replay_refusal``), and a transport resends it on a fresh connection
only while no chunk of it has been taken (``may_resend``).

Chunks are 64 KiB, the size aiohttp and httpx read files in: big enough that
an executor hop per chunk costs little, small enough that memory stays flat.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import stat
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from microcall._attempt import AttemptKind, RefusalReason
from microcall._pump import Pump
from microcall.errors import RedirectError, RequestBodyError, UsageError

if TYPE_CHECKING:
    from microcall._request import Request

CHUNK_SIZE = 64 * 1024

# One lock for every seek-then-read: the two steps must not interleave with
# another pass's on the same file, and they are short.
_SEEK_LOCK = threading.Lock()


class SyncFile(Protocol):
    """A file opened for reading in binary mode (``open(path, "rb")``, ``io.BytesIO``...)."""

    def read(self, size: int, /) -> bytes: ...


class AsyncFile(Protocol):
    """Anything with ``async def read(size) -> bytes`` (aiofiles, an ``asyncio.StreamReader``...)."""

    def read(self, size: int, /) -> Awaitable[bytes]: ...


Content = (
    bytes
    | bytearray
    | memoryview
    | str
    | SyncFile
    | AsyncFile
    | Iterator[bytes]
    | AsyncIterable[bytes]
)
"""What a body may be given as: bytes or text (held), or a source read while it is sent."""


class BodyFailed(Exception):
    """The body's source failed while it was read, or gave a wrong number of bytes.

    ``cause`` is the source's own exception, if it raised one. (Kept apart from
    ``__cause__``, which a library the body passes through may reset: httpcore
    re-raises what its request stream raised ``from None``.)
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class BodyReplayed(BodyFailed):
    """A body read once was to be sent a second time: only a redirect (307, 308) asks for that."""


class _Reader(Protocol):
    async def read(self) -> object:
        """The next chunk (maybe empty), or None at the end (what user code gives is checked)."""
        ...


class Source(Protocol):
    """Where a body's bytes come from: a reader per pass."""

    replayable: bool

    def open(self) -> _Reader: ...


class Body:
    """A request body read from a source while it is sent (see the module's theory).

    ``what`` names it in errors (``"content= (generator)"``). ``started``
    says whether a pass has begun taking chunks from a body read once;
    ``failed`` whether a pass saw its source fail.
    """

    __slots__ = ("failed", "length", "replayable", "source", "started", "what")

    def __init__(self, source: Source, length: int | None, what: str) -> None:
        self.source = source
        self.length = length
        self.replayable = source.replayable
        self.what = what
        self.started = False
        self.failed = False

    def send(self) -> BodySend:
        """What one attempt sends: iterate it for the bytes (each iteration starts over)."""
        return BodySend(self)

    def __repr__(self) -> str:
        size = "unknown length" if self.length is None else f"{self.length} bytes"
        return f"<Body {self.what}, {size}>"


class BodySend:
    """One attempt's sending of a Body; ``failure`` is what went wrong with its source, if anything.

    The transport ``close()``s it when the attempt ends, however it ends: a
    source read ahead on a thread (``_pump``) stops there.
    """

    __slots__ = ("_passes", "body", "failure", "length", "sent")

    def __init__(self, body: Body) -> None:
        self.body = body
        self.length = body.length
        self.failure: BodyFailed | None = None
        self.sent = 0  # bytes taken from the source by the last pass
        self._passes: list[_Pass] = []

    def __aiter__(self) -> AsyncIterator[bytes]:
        one = _Pass(self)
        self._passes.append(one)
        return one

    def close(self) -> None:
        """Release what the passes hold (a reading thread); the body's bytes are not read further."""
        for one in self._passes:
            one.close()


class _Pass:
    """One pass over a body's bytes, from its beginning."""

    __slots__ = ("_reader", "_send")

    def __init__(self, send: BodySend) -> None:
        self._send = send
        self._reader: _Reader | None = None

    def __aiter__(self) -> _Pass:
        return self

    async def __anext__(self) -> bytes:
        send = self._send
        body = send.body
        reader = self._reader
        if reader is None:
            if not body.replayable:
                if body.started:
                    raise self._fail(BodyReplayed(f"{body.what} is read once and was already sent"))
                body.started = True
            send.sent = 0
            reader = self._reader = body.source.open()
        while True:
            try:
                # object: user code gives it, whatever the annotations say.
                given: object = await reader.read()
            except BodyFailed as failed:
                raise self._fail(failed) from failed.cause
            except Exception as exc:
                raise self._fail(BodyFailed(f"{body.what} raised {exc!r}", exc)) from exc
            length = send.length
            if given is None:
                if length is not None and send.sent != length:
                    raise self._fail(
                        BodyFailed(
                            f"{body.what} ended after {send.sent} of the {length} bytes "
                            "its length announced"
                        )
                    )
                raise StopAsyncIteration
            if type(given) is bytes:
                chunk = given
            elif isinstance(given, (bytearray, memoryview)):
                chunk = bytes(given)
            else:
                raise self._fail(
                    BodyFailed(f"{body.what} gave a {type(given).__name__}, not bytes")
                )
            if not chunk:
                continue  # an empty chunk would end a chunked body early
            send.sent += len(chunk)
            if length is not None and send.sent > length:
                raise self._fail(
                    BodyFailed(
                        f"{body.what} gave more than the {length} bytes its length announced"
                    )
                )
            return chunk

    def close(self) -> None:
        close = getattr(self._reader, "close", None)
        if close is not None:
            close()

    def _fail(self, failed: BodyFailed) -> BodyFailed:
        self._send.failure = failed
        self._send.body.failed = True
        return failed


# ------------------------------------------------------------------ sources


class BytesSource:
    """Bytes already in memory (a multipart part given as bytes): one chunk, replayable."""

    replayable = True

    def __init__(self, data: bytes) -> None:
        self._data = data

    def open(self) -> _Reader:
        return _BytesReader(self._data)


class _BytesReader:
    __slots__ = ("_data",)

    def __init__(self, data: bytes | None) -> None:
        self._data = data

    async def read(self) -> bytes | None:
        data, self._data = self._data, None
        return data


class _IteratorSource:
    """A sync iterator of bytes, read once, on a thread of its own (``microcall._pump``)."""

    replayable = False

    def __init__(self, iterator: Iterator[bytes]) -> None:
        self._iterator = iterator

    def open(self) -> _Reader:
        return Pump(self._iterator, CHUNK_SIZE)


class _AsyncIteratorSource:
    """An async iterable of bytes, read once."""

    replayable = False

    def __init__(self, iterable: AsyncIterable[bytes]) -> None:
        self._iterator = aiter(iterable)

    def open(self) -> _Reader:
        return self

    async def read(self) -> bytes | None:
        return await anext(self._iterator, None)


class _AsyncFileSource:
    """An object with ``async read(n)``, read once until it returns empty."""

    replayable = False

    def __init__(self, file: AsyncFile) -> None:
        self._file = file

    def open(self) -> _Reader:
        return self

    async def read(self) -> bytes | None:
        chunk = await self._file.read(CHUNK_SIZE)
        return chunk if chunk else None


class _FileSource:
    """A sync binary file: read with pread, seek+read or plain read (see the module's theory)."""

    def __init__(self, file: SyncFile, what: str, start: int, length: int | None, how: str) -> None:
        self.file = file
        self.what = what
        self.start = start
        self.length = length
        self.how = how  # "pread", "memory", "seek" or "stream"
        self.replayable = how != "stream"

    def open(self) -> _Reader:
        return _FileReader(self)


class _FileReader:
    __slots__ = ("_left", "_offset", "_source")

    def __init__(self, source: _FileSource) -> None:
        self._source = source
        self._offset = source.start
        self._left = source.length

    async def read(self) -> bytes | None:
        source = self._source
        size = CHUNK_SIZE if self._left is None else min(CHUNK_SIZE, self._left)
        if size == 0:
            return None  # the announced length is sent (a file that grew meanwhile stops here)
        try:
            if source.how == "memory":
                chunk = _seek_read(source.file, self._offset, size)
            else:
                loop = asyncio.get_running_loop()
                reading = _READS[source.how]
                chunk = await loop.run_in_executor(None, reading, source.file, self._offset, size)
        except (OSError, ValueError) as exc:
            if getattr(source.file, "closed", False):
                raise BodyFailed(f"{source.what} was closed while it was sent", exc) from exc
            raise
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise BodyFailed(f"{source.what}.read() gave a {type(chunk).__name__}, not bytes")
        if not chunk:
            return None
        self._offset += len(chunk)
        if self._left is not None:
            self._left -= len(chunk)
        return bytes(chunk)


def _pread(file: SyncFile, offset: int, size: int) -> bytes:
    # fileno() each time: a file closed meanwhile raises, rather than its
    # number being read after another file took it.
    return os.pread(file.fileno(), size, offset)  # type: ignore[attr-defined]


def _seek_read(file: SyncFile, offset: int, size: int) -> bytes:
    with _SEEK_LOCK:
        file.seek(offset)  # type: ignore[attr-defined]
        return file.read(size)


def _stream_read(file: SyncFile, offset: int, size: int) -> bytes:
    return file.read(size)


_READS = {"pread": _pread, "seek": _seek_read, "stream": _stream_read}


# ------------------------------------------------------------------ building


def source_of(value: object, what: str) -> tuple[Source, int | None] | None:
    """The source a streamed body reads, and its length if known; None if ``value`` is no source.

    ``what`` names the value in errors. A value that looks like a source
    but cannot be one (a text-mode or closed file) is a UsageError.
    """
    read = getattr(value, "read", None)
    if callable(read):
        if inspect.iscoroutinefunction(read):
            return _AsyncFileSource(value), None  # type: ignore[arg-type]
        return _file_source(value, what)
    if isinstance(value, AsyncIterable):
        return _AsyncIteratorSource(value), None
    if isinstance(value, Iterator):
        return _IteratorSource(value), None
    return None


def describe(value: object) -> str:
    """How a source is named in errors: its type, and a file's name."""
    name = getattr(value, "name", None)
    kind = type(value).__name__
    return f"{kind} {os.path.basename(name)!r}" if isinstance(name, str) else kind


def _file_source(file: Any, what: str) -> tuple[Source, int | None]:
    # Any: the caller's object, checked here for what a file must be.
    mode = getattr(file, "mode", "b")
    if isinstance(file, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode):
        raise UsageError(f"{what} is a text file; open it in binary mode ('rb')")
    if getattr(file, "closed", False):
        raise UsageError(f"{what} is closed")
    try:
        seekable = bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        seekable = False
    if not seekable:
        return _FileSource(file, what, 0, None, "stream"), None
    start: int = file.tell()
    if isinstance(file, io.BytesIO):
        with file.getbuffer() as view:
            length = max(view.nbytes - start, 0)
        return _FileSource(file, what, start, length, "memory"), length
    size = _regular_file_size(file)
    if size is not None:
        length = max(size - start, 0)
        return _FileSource(file, what, start, length, "pread"), length
    with _SEEK_LOCK:
        end = file.seek(0, io.SEEK_END)
        file.seek(start)
    length = max(end - start, 0)
    return _FileSource(file, what, start, length, "seek"), length


def _regular_file_size(file: SyncFile) -> int | None:
    """The size of the regular file behind ``file`` (None: no descriptor, or not a regular file)."""
    try:
        descriptor = file.fileno()  # type: ignore[attr-defined]
        status = os.fstat(descriptor)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode) or not hasattr(os, "pread"):
        return None
    return status.st_size


# ------------------------------------------------------------------ rules for the others


def replay_refusal(request: Request, kind: AttemptKind) -> RefusalReason | None:
    """Why an extra attempt (a retry, a hedge) of ``request`` may not go, if its body forbids it.

    A body read once cannot be sent again, nor can one whose source failed.
    """
    body = request.body
    if kind is AttemptKind.FIRST or not isinstance(body, Body):
        return None
    if body.replayable and not body.failed:
        return None
    return RefusalReason.BODY_NOT_REPLAYABLE


def may_resend(body: object) -> bool:
    """Whether a body may go out again on a fresh connection: replayable, or not a chunk taken yet."""
    return not isinstance(body, Body) or body.replayable or not body.started


def body_error(failed: BodyFailed, request: Request) -> RequestBodyError | RedirectError:
    """The typed error of a call whose body failed while it was sent to ``request.endpoint``."""
    error: RequestBodyError | RedirectError
    if isinstance(failed, BodyReplayed):
        error = RedirectError(cannot_redirect(request), request=request)
    else:
        error = RequestBodyError(
            f"the request body failed while it was sent to {request.endpoint}: {failed}",
            request=request,
        )
    failed.__cause__ = failed.cause
    error.__cause__ = failed
    return error


def cannot_redirect(request: Request) -> str:
    """Why a redirect that keeps the body (307, 308) cannot be followed with a body read once."""
    return (
        f"{request.endpoint} redirected a request whose body is read once (an iterator or "
        "a stream), so it cannot be sent again; give bytes or a seekable file to follow it"
    )
