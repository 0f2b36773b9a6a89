"""Streamed request bodies on every transport, against a real server that says what arrived.

Each kind of body (generator, async generator, file, in-memory file, async
file, pipe) arrives whole, framed by Content-Length when its length is known
and chunked otherwise; a large file goes without being read into memory; a
seekable file is replayed by retries and hedges, while a body read once makes
one attempt and says why the others were refused; a body that fails mid-way
ends the call with a RequestBodyError; a body of the wrong kind is refused
before anything is sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import microcall
from microcall import RequestBodyError, UsageError
from microcall._attempt import RefusalReason
from tests.client._uploads import (
    QUICK_BACKOFF,
    TRANSPORTS,
    TransportName,
    Uploads,
    make_client,
    sha256,
    uploads_fixture,  # noqa: F401
)

CHUNK = 64 * 1024
DATA = random.Random(7).randbytes(300_000)  # several chunks, and a ragged last one
GENEROUS = 30.0


def chunks(data: bytes = DATA, size: int = 10_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def async_chunks(data: bytes = DATA, size: int = 10_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


class AsyncFile:
    """The least an async file is: ``async read(n)``, empty at the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    async def read(self, size: int) -> bytes:
        await asyncio.sleep(0)
        chunk = self._data[self._at : self._at + size]
        self._at += len(chunk)
        return chunk


def pipe(data: bytes) -> io.BufferedReader:
    """The reading end of a pipe a thread fills with ``data``: a file that cannot seek."""
    read_end, write_end = os.pipe()

    def fill() -> None:
        with os.fdopen(write_end, "wb") as out:
            out.write(data)

    threading.Thread(target=fill, daemon=True).start()
    return os.fdopen(read_end, "rb")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    return path


def client(transport: TransportName, uploads: Uploads, **options: Any) -> microcall.AsyncClient:
    return make_client(transport, uploads.base, timeout=GENEROUS, **options)


# ------------------------------------------------------------------ each kind arrives whole


KINDS = [
    "generator",
    "async generator",
    "file",
    "file at an offset",
    "BytesIO",
    "async file",
    "pipe",
    "generator with Content-Length",
]


def body_of(kind: str, path: Path) -> tuple[Any, dict[str, str], bytes, str]:
    """(content, headers, the bytes that must arrive, "chunked" or "length")."""
    if kind == "generator":
        return chunks(), {}, DATA, "chunked"
    if kind == "async generator":
        return async_chunks(), {}, DATA, "chunked"
    if kind == "file":
        return path.open("rb"), {}, DATA, "length"
    if kind == "file at an offset":
        opened = path.open("rb")
        opened.seek(1000)
        return opened, {}, DATA[1000:], "length"
    if kind == "BytesIO":
        return io.BytesIO(DATA), {}, DATA, "length"
    if kind == "async file":
        return AsyncFile(DATA), {}, DATA, "chunked"
    if kind == "pipe":
        return pipe(DATA), {}, DATA, "chunked"
    assert kind == "generator with Content-Length"
    return chunks(), {"Content-Length": str(len(DATA))}, DATA, "length"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_kind_of_body_arrives_whole(
    uploads: Uploads, data_file: Path, transport: TransportName, kind: str
) -> None:
    content, headers, expected, framing = body_of(kind, data_file)
    async with client(transport, uploads) as calls:
        response = await calls.put("/echo", content=content, headers=headers)
    if hasattr(content, "close"):
        content.close()
    seen = response.raise_for_status().json()
    assert seen["size"] == len(expected)
    assert seen["sha256"] == sha256(expected)
    if framing == "chunked":
        assert seen["transfer_encoding"] == "chunked"
        assert seen["content_length"] is None
    else:
        assert seen["transfer_encoding"] is None
        assert seen["content_length"] == str(len(expected))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_data_takes_a_body_as_content_does(
    uploads: Uploads, data_file: Path, transport: TransportName
) -> None:
    async with client(transport, uploads) as calls:
        with data_file.open("rb") as opened:
            response = await calls.post("/echo", data=opened)
    assert response.json()["sha256"] == sha256(DATA)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_large_file_is_streamed_not_read_into_memory(
    uploads: Uploads, tmp_path: Path, transport: TransportName
) -> None:
    size = 64 * 1024 * 1024
    path = tmp_path / "large.bin"
    block = random.Random(1).randbytes(1024 * 1024)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
    async with client(transport, uploads) as calls:
        await calls.put("/echo", content=b"warm up the connection")
        tracemalloc.start()
        try:
            with path.open("rb") as opened:
                response = await calls.put("/echo", content=opened)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    seen = response.raise_for_status().json()
    assert seen["size"] == size
    assert seen["content_length"] == str(size)
    # Client and server together, traced: a body held whole would be 64 MiB.
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated at the peak"


# ------------------------------------------------------------------ replay


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["file", "BytesIO"])
async def test_a_seekable_file_is_replayed_whole_by_each_retry(
    uploads: Uploads, data_file: Path, transport: TransportName, kind: str
) -> None:
    content = data_file.open("rb") if kind == "file" else io.BytesIO(DATA)
    content.seek(500)  # replayed from where it stood when the call was made
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with client(transport, uploads, strategy=strategy) as calls:
        response = await calls.put("/flaky/2", content=content)
    content.close()
    assert response.status_code == 200
    assert [attempt.status for attempt in response.attempts] == [503, 503, 200]
    assert uploads.bodies == [sha256(DATA[500:])] * 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hedges_each_send_the_whole_file(
    uploads: Uploads, data_file: Path, transport: TransportName
) -> None:
    uploads.delay = 2.0  # the first attempt's answer comes late: the hedge wins
    strategy = microcall.hedged(0.05, attempts=2)
    async with client(transport, uploads, strategy=strategy) as calls:
        with data_file.open("rb") as opened:
            response = await calls.put("/slow", content=opened)
    assert response.status_code == 200
    assert [attempt.kind for attempt in response.attempts] == ["first", "hedge"]
    assert response.json()["sha256"] == sha256(DATA)
    # Both went out; each body the server read to its end was the whole file
    # (the first one's, on a loaded machine, may still be arriving when the
    # hedge wins and it is cancelled).
    assert uploads.requests == 2
    assert uploads.bodies
    assert set(uploads.bodies) == {sha256(DATA)}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_generator_is_not_retried_and_the_refusal_says_why(
    uploads: Uploads, transport: TransportName
) -> None:
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with client(transport, uploads, strategy=strategy) as calls:
        response = await calls.put("/flaky/1", content=chunks())
    # The 503 is the answer: the retry it called for was refused.
    assert response.status_code == 503
    first, refused = response.attempts
    assert first.status == 503
    assert not refused.sent
    assert refused.error == RefusalReason.BODY_NOT_REPLAYABLE
    assert refused.describe() == "#1 retry not sent: body cannot be replayed"
    assert uploads.requests == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_generator_is_not_hedged_and_the_refusal_says_why(
    uploads: Uploads, transport: TransportName
) -> None:
    uploads.delay = 0.5
    strategy = microcall.hedged(0.05, attempts=2)
    async with client(transport, uploads, strategy=strategy) as calls:
        response = await calls.put("/slow", content=async_chunks())
    assert response.status_code == 200
    assert response.json()["sha256"] == sha256(DATA)
    first, refused = response.attempts
    assert (first.status, refused.kind, refused.sent) == (200, "hedge", False)
    assert refused.error == "body cannot be replayed"
    assert uploads.requests == 1


async def test_a_post_with_a_generator_is_sent_once_without_a_refusal(uploads: Uploads) -> None:
    # A POST does not retry anyway (no opt-in): there is nothing to refuse.
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with client("h1", uploads, strategy=strategy) as calls:
        response = await calls.post("/flaky/1", content=chunks())
    assert [attempt.status for attempt in response.attempts] == [503]


# ------------------------------------------------------------------ a body that fails mid-way


def failing(after: int) -> Iterator[bytes]:
    yield from chunks(DATA[:after])
    raise ValueError("the disk went away")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_generator_raising_mid_upload_ends_in_a_request_body_error(
    uploads: Uploads, transport: TransportName
) -> None:
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with client(transport, uploads, strategy=strategy) as calls:
        with pytest.raises(RequestBodyError) as raised:
            await calls.put("/echo", content=failing(50_000))
        # The client is still good for the next call.
        assert (await calls.put("/echo", content=b"next")).status_code == 200
    error = raised.value
    assert "content= (generator) raised ValueError('the disk went away')" in str(error)
    assert isinstance(error.__cause__, Exception)
    assert isinstance(error.__cause__.__cause__, ValueError)
    first, refused = error.attempts
    assert first.error is not None
    assert first.error.startswith("RequestBodyError")
    assert refused.describe() == "#1 retry not sent: body cannot be replayed"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_file_closed_mid_upload_ends_in_a_request_body_error(
    serve: Any, tmp_path: Path, transport: TransportName
) -> None:
    from aiohttp import web

    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * (32 * 1024 * 1024))  # far more than the socket buffers hold
    opened = path.open("rb")

    async def close_it_then_read(request: web.Request) -> web.Response:
        opened.close()  # the caller's file, closed while its upload is under way
        await request.read()
        return web.Response(text="read it all")

    app = web.Application(client_max_size=2**40)
    app.router.add_put("/", close_it_then_read)
    base = await serve(app)
    async with make_client(transport, base, timeout=GENEROUS) as calls:
        with pytest.raises(RequestBodyError, match="was closed while it was sent"):
            await calls.put("/", content=opened)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (len(DATA) + 10, "ended after 300000 of the 300010 bytes"),
        (len(DATA) - 10, "gave more than"),
    ],
)
async def test_a_body_that_does_not_match_its_content_length_fails(
    uploads: Uploads, transport: TransportName, declared: int, message: str
) -> None:
    async with client(transport, uploads) as calls:
        with pytest.raises(RequestBodyError, match=message):
            await calls.put("/echo", content=chunks(), headers={"Content-Length": str(declared)})


# ------------------------------------------------------------------ refused before sending


def refused_bodies(path: Path) -> list[tuple[dict[str, Any], str]]:
    closed = path.open("rb")
    closed.close()
    return [
        ({"content": [b"a", b"b"]}, "got list"),
        ({"content": 42}, "got int"),
        ({"data": object()}, "got object"),
        ({"content": path.open("r")}, "open it in binary mode ('rb')"),
        ({"content": closed}, "is closed"),
        ({"content": chunks(), "headers": {"Transfer-Encoding": "chunked"}}, "Transfer-Encoding"),
        ({"content": chunks(), "headers": {"Content-Length": "ten"}}, "not a length"),
        ({"content": path.open("rb"), "headers": {"Content-Length": "5"}}, "300000 bytes"),
        ({"files": "report.csv"}, "files= takes a mapping"),
        ({"files": {"a": 42}}, "files['a'] is a int"),
        ({"files": {"a": ("only a name",)}}, "tuple of 1"),
        ({"files": [("a",)]}, "(name, file) tuples"),
        ({"files": {"a": b"x"}, "json": {"b": 1}}, "not json"),
        ({"files": {"a": b"x"}, "content": b"y"}, "not content"),
        ({"files": {"a": b"x"}, "data": b"raw"}, "form fields"),
        ({"files": {"a\r\nX-Evil: 1": b"x"}}, "control character"),
        ({"files": {"a": ("evil\n.txt", b"x")}}, "control character"),
        ({"files": {"a": ("f.txt", b"x", "text/plain", {"Content-Length": "1"})}}, "RFC 7578"),
        ({"files": {"a": ("f.txt", b"x", "text/plain\r\n")}}, "control character"),
        ({"files": {"a": b"x"}, "data": {"k": {"nested": 1}}}, "is a dict"),
    ]


async def test_a_body_of_the_wrong_kind_is_refused_before_anything_is_sent(
    uploads: Uploads, data_file: Path
) -> None:
    async with client("h1", uploads) as calls:
        for options, message in refused_bodies(data_file):
            with pytest.raises(UsageError, match=re.escape(message)):
                await calls.post("/echo", **options)
            body = options.get("content")
            if isinstance(body, io.IOBase):
                body.close()
    assert uploads.requests == 0


# ------------------------------------------------------------------ a token refresh after a 401


class Renewing(microcall.Auth):
    """A token the server accepts from the second one on: every first send meets a 401."""

    def __init__(self) -> None:
        self.token = 1
        self.refreshed = 0

    def apply(self, request: Any) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"

    async def refresh(self, response: Any) -> None:
        self.refreshed += 1
        self.token += 1


async def test_a_token_refresh_sends_a_file_again_but_not_a_generator(
    serve: Any, data_file: Path
) -> None:
    from aiohttp import web

    bodies: list[str] = []

    async def guarded(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(sha256(body))
        if request.headers.get("Authorization") == "Bearer 1":
            return web.Response(status=401)
        return web.Response(text="stored")

    app = web.Application(client_max_size=2**40)
    app.router.add_put("/", guarded)
    base = await serve(app)
    async with microcall.AsyncClient(base, auth=Renewing(), timeout=GENEROUS) as calls:
        with data_file.open("rb") as opened:
            replayed = await calls.put("/", content=opened)
    async with microcall.AsyncClient(base, auth=Renewing(), timeout=GENEROUS) as calls:
        once = await calls.put("/", content=chunks())
    assert (replayed.status_code, replayed.text) == (200, "stored")
    # The 401 is the answer: the generator was taken from already.
    assert once.status_code == 401
    assert bodies == [sha256(DATA)] * 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_upload_with_a_streamed_answer(uploads: Uploads, transport: TransportName) -> None:
    async with (
        client(transport, uploads) as calls,
        calls.stream("PUT", "/echo", content=async_chunks()) as response,
    ):
        answer = b"".join([piece async for piece in response.aiter_bytes()])
    assert json.loads(answer)["sha256"] == sha256(DATA)
