"""multipart/form-data bodies (``files=``), framed by aiohttp's MultipartWriter and streamed.

Theory of operation. aiohttp (a core dependency) writes the framing: the
boundary lines, each part's ``Content-Disposition`` with its name and
filename, each part's ``Content-Type`` (given, or guessed from the
filename), and the total size when every part's is known. microcall does
not write multipart itself.

What aiohttp would do with the parts' bytes, though, microcall keeps for
itself: a file part is a :class:`_PartPayload` whose ``write`` hands the
writer its *source* instead of bytes. Writing the whole MultipartWriter into
a :class:`_Frames` collector then gives the body as a list of segments,
framing bytes and sources in order, once per call. Each pass over the body
walks those segments, reading each source through a reader of its own, so
file parts stream (never read whole), a seekable file part replays from its
start for every attempt, and hedges read side by side (see ``_body``).

Names and filenames go as UTF-8, with ``"`` and ``\\`` escaped (aiohttp's
``quote_fields=False``), which is what browsers send and what aiohttp,
Starlette and Werkzeug read; aiohttp's default would percent-encode a
filename, which some servers then keep as is.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import MultipartWriter
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload, StringPayload

from microcall._body import Body, BytesSource, Content, Source, _Reader, describe, source_of
from microcall._checks import check_body_text, check_headers, check_part_text
from microcall.errors import UsageError

FileValue = (
    Content
    | tuple[str | None, Content]
    | tuple[str | None, Content, str | None]
    | tuple[str | None, Content, str | None, Mapping[str, str]]
)
"""One ``files=`` entry: the content, or ``(filename, content[, content_type[, headers]])``."""

Files = Mapping[str, FileValue] | Sequence[tuple[str, FileValue]]
"""``files=``: names to files, or ``(name, file)`` pairs (one name may repeat)."""

# Headers a form-data part may not carry (RFC 7578 sections 4.7 and 4.8);
# aiohttp asserts as much.
_PART_FRAMING = frozenset({"content-length", "content-encoding", "content-transfer-encoding"})


def multipart_body(fields: Sequence[tuple[str, str]], files: Any) -> tuple[Body, str]:
    """The body of a form with ``fields`` (checked text pairs) and ``files``, and its Content-Type."""
    writer = MultipartWriter("form-data", boundary=uuid.uuid4().hex)
    sources: list[Source] = []
    for name, text in fields:
        check_part_text(name, "data name")
        field = StringPayload(text)
        field.set_content_disposition("form-data", quote_fields=False, name=name)
        writer.append_payload(field)
    for name, value in _file_pairs(files):
        filename, content, content_type, headers = _entry(name, value)
        where = f"files[{name!r}]"
        if isinstance(content, str):
            content = check_body_text(content, where)
        if isinstance(content, (bytes, bytearray, memoryview)):
            data = bytes(content)
            source: Source = BytesSource(data)
            length: int | None = len(data)
        else:
            found = source_of(content, f"{where} ({describe(content)})")
            if found is None:
                raise UsageError(
                    f"{where} is a {type(content).__name__}; a file is bytes, str, a file opened "
                    "'rb', an object with async read(), or an iterator or async iterator of bytes"
                )
            source, length = found
        sources.append(source)
        part = _PartPayload(source, length, filename=filename, content_type=content_type)
        if headers:
            part.headers.update(headers)
        params = {"name": name} if filename is None else {"name": name, "filename": filename}
        part.set_content_disposition("form-data", quote_fields=False, **params)
        writer.append_payload(part)
    size = writer.size
    body = Body(_MultipartSource(writer, sources), size, "files=")
    return body, writer.content_type


def _file_pairs(files: Any) -> list[tuple[str, Any]]:
    if isinstance(files, Mapping):
        pairs = list(files.items())
    elif isinstance(files, (list, tuple)):
        pairs = list(files)
    else:
        raise UsageError(
            f"files= takes a mapping of names to files or a list of (name, file) pairs, "
            f"got {type(files).__name__}"
        )
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UsageError(f"files= pairs are (name, file) tuples, got {pair!r}")
        check_part_text(pair[0], "files name")
    return pairs


def _entry(name: str, value: Any) -> tuple[str | None, Any, str | None, dict[str, str] | None]:
    """``(filename, content, content_type, headers)`` of one files= entry, checked."""
    where = f"files[{name!r}]"
    if isinstance(value, tuple):
        if not 2 <= len(value) <= 4:
            raise UsageError(
                f"{where} is a tuple of {len(value)}; give (filename, content), "
                "(filename, content, content_type) or (filename, content, content_type, headers)"
            )
        filename, content, content_type, headers = (*value, None, None)[:4]
    else:
        content, content_type, headers = value, None, None
        # requests' rule: a file's own name, else the field's name.
        given = getattr(value, "name", None)
        filename = _basename(given) if isinstance(given, str) and given[:1] != "<" else name
    if filename is not None:
        check_part_text(filename, f"{where} filename")
    if content_type is not None:
        check_headers({"Content-Type": content_type})
    checked: dict[str, str] | None = None
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise UsageError(f"{where} headers are a mapping, got {type(headers).__name__}")
        check_headers(headers)
        refused = sorted(key for key in headers if key.lower() in _PART_FRAMING)
        if refused:
            raise UsageError(
                f"{where} headers may not set {', '.join(refused)} (RFC 7578: form-data "
                "parts carry no length or encoding of their own)"
            )
        checked = dict(headers)
    return filename, content, content_type, checked


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


class _PartPayload(Payload):
    """A file part: aiohttp frames it; its bytes come from ``source`` at send time."""

    _autoclose = True  # holds no resource of its own: the caller's file stays the caller's

    def __init__(
        self, source: Source, length: int | None, *, filename: str | None, content_type: str | None
    ) -> None:
        super().__init__(source, filename=filename, content_type=content_type)
        self._size = length

    async def write(self, writer: AbstractStreamWriter) -> None:
        assert isinstance(writer, _Frames)  # written only by _MultipartSource
        writer.segments.append(self._value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed part has no text until it is sent")


class _Frames(AbstractStreamWriter):
    """Collects what MultipartWriter writes: framing bytes, and the parts' sources in place."""

    def __init__(self) -> None:
        self.segments: list[bytes | Source] = []

    async def write(self, chunk: Any) -> None:
        if chunk:
            self.segments.append(bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        await self.write(chunk)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: Any = None) -> None:
        raise NotImplementedError

    def enable_chunking(self) -> None:
        raise NotImplementedError

    async def write_headers(self, status_line: str, headers: Any) -> None:
        raise NotImplementedError

    def send_headers(self) -> None:
        raise NotImplementedError


class _MultipartSource:
    """The form's segments, walked from the start by each pass."""

    def __init__(self, writer: MultipartWriter, sources: list[Source]) -> None:
        self._writer = writer
        self._segments: list[bytes | Source] | None = None
        self.replayable = all(source.replayable for source in sources)

    def open(self) -> _Reader:
        return _MultipartReader(self)

    async def segments(self) -> list[bytes | Source]:
        if self._segments is None:
            frames = _Frames()
            await self._writer.write(frames)
            self._segments = frames.segments
        return self._segments


class _MultipartReader:
    __slots__ = ("_index", "_part", "_segments", "_source")

    def __init__(self, source: _MultipartSource) -> None:
        self._source = source
        self._segments: list[bytes | Source] | None = None
        self._index = 0
        self._part: _Reader | None = None

    def close(self) -> None:
        close = getattr(self._part, "close", None)
        if close is not None:
            close()

    async def read(self) -> object:
        segments = self._segments
        if segments is None:
            segments = self._segments = await self._source.segments()
        while True:
            if self._part is not None:
                chunk = await self._part.read()
                if chunk is not None:
                    return chunk
                self._part = None
            if self._index >= len(segments):
                return None
            segment = segments[self._index]
            self._index += 1
            if isinstance(segment, bytes):
                return segment
            self._part = segment.open()
