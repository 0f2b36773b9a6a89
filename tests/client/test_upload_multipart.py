"""``files=``: multipart/form-data with form fields alongside, on every transport and front door.

Two real parsers read each form (aiohttp's streaming reader and Werkzeug's):
names, filenames (non-ASCII and quoted ones too), content types, and every
part's bytes arrive as given. A form whose parts all have a known length goes
with a Content-Length; one with a part read from an iterator goes chunked.
File parts stream, and a form of replayable parts is replayed by retries.
"""

from __future__ import annotations

import asyncio
import io
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import microcall
from tests.client._uploads import (
    QUICK_BACKOFF,
    TRANSPORTS,
    TransportName,
    Uploads,
    make_client,
    sha256,
    uploads_fixture,  # noqa: F401
)

PHOTO = random.Random(3).randbytes(200_000)
NOTES = "naïve notes\n".encode() * 1000
CSV = b"id,title\n1,Dune\n2,Hyperion\n"
GENEROUS = 30.0


def streamed(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), 7000):
        yield data[start : start + 7000]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "cover.jpg"
    path.write_bytes(PHOTO)
    return path


def form(photo: Path, *, with_stream: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    files: dict[str, Any] = {
        "report": ("report.csv", CSV, "text/csv"),
        "cover": photo.open("rb"),
        "notes": ('naïve "draft".txt', io.BytesIO(NOTES)),
        "raw": b"\x00\x01 bytes",
    }
    if with_stream:
        files["log"] = ("run.log", streamed(NOTES), "text/plain")
    fields = {"title": "Q3 report", "tags": ["a", "b"], "note": "é", "draft": True, "gone": None}
    return files, fields


EXPECTED_PARTS = [
    # (name, filename, content type, bytes)
    ("title", None, "text/plain; charset=utf-8", b"Q3 report"),
    ("tags", None, "text/plain; charset=utf-8", b"a"),
    ("tags", None, "text/plain; charset=utf-8", b"b"),
    ("note", None, "text/plain; charset=utf-8", "é".encode()),
    ("draft", None, "text/plain; charset=utf-8", b"true"),
    ("report", "report.csv", "text/csv", CSV),
    ("cover", "cover.jpg", "image/jpeg", PHOTO),
    ("notes", 'naïve "draft".txt', "text/plain", NOTES),
    ("raw", "raw", "application/octet-stream", b"\x00\x01 bytes"),
]
STREAMED_PART = ("log", "run.log", "text/plain", NOTES)


def close_files(files: dict[str, Any]) -> None:
    for value in files.values():
        if isinstance(value, io.BufferedReader):
            value.close()


@pytest.mark.parametrize("with_stream", [False, True], ids=["all-known", "with-a-generator"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_files_and_fields_arrive_as_given(
    uploads: Uploads, photo: Path, transport: TransportName, with_stream: bool
) -> None:
    async with make_client(transport, uploads.base, timeout=GENEROUS) as client:
        files, fields = form(photo, with_stream=with_stream)
        response = await client.post("/form", data=fields, files=files)
        close_files(files)
        files, fields = form(photo, with_stream=with_stream)
        second_opinion = await client.post("/werkzeug", data=fields, files=files)
        close_files(files)
    seen = response.raise_for_status().json()
    expected = EXPECTED_PARTS + ([STREAMED_PART] if with_stream else [])
    assert [
        (part["name"], part["filename"], part["content_type"], part["size"], part["sha256"])
        for part in seen["parts"]
    ] == [
        (name, filename, kind, len(data), sha256(data)) for name, filename, kind, data in expected
    ]
    if with_stream:
        assert (seen["transfer_encoding"], seen["content_length"]) == ("chunked", None)
    else:
        assert seen["transfer_encoding"] is None
        assert int(seen["content_length"]) > len(PHOTO) + len(NOTES)

    werkzeug = second_opinion.raise_for_status().json()
    assert werkzeug["fields"] == {
        "title": ["Q3 report"],
        "tags": ["a", "b"],
        "note": ["é"],
        "draft": ["true"],
    }
    assert werkzeug["files"]["cover"] == [["cover.jpg", "image/jpeg", sha256(PHOTO)]]
    assert werkzeug["files"]["notes"] == [['naïve "draft".txt', "text/plain", sha256(NOTES)]]
    assert werkzeug["files"]["report"] == [["report.csv", "text/csv", sha256(CSV)]]


async def test_pairs_repeat_a_name_and_a_filename_of_none_makes_a_plain_field(
    uploads: Uploads,
) -> None:
    async with make_client("h1", uploads.base, timeout=GENEROUS) as client:
        response = await client.post(
            "/werkzeug",
            files=[
                ("attachment", ("one.txt", b"1")),
                ("attachment", ("two.txt", b"2", "text/plain", {"X-Part": "second"})),
                ("comment", (None, b"not a file")),
            ],
        )
    seen = response.raise_for_status().json()
    assert [name for name, _, _ in seen["files"]["attachment"]] == ["one.txt", "two.txt"]
    assert seen["fields"] == {"comment": ["not a file"]}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_form_of_replayable_parts_is_replayed_by_retries(
    uploads: Uploads, photo: Path, transport: TransportName
) -> None:
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with make_client(transport, uploads.base, timeout=GENEROUS, strategy=strategy) as client:
        with photo.open("rb") as cover:
            response = await client.post(
                "/flaky/2", files={"cover": cover}, data={"title": "x"}, idempotent=True
            )
    assert [attempt.status for attempt in response.attempts] == [503, 503, 200]
    # The same bytes went out three times (the boundary included).
    assert len(uploads.bodies) == 3
    assert len(set(uploads.bodies)) == 1


async def test_a_form_with_a_generator_part_is_sent_once(uploads: Uploads) -> None:
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with make_client("h1", uploads.base, timeout=GENEROUS, strategy=strategy) as client:
        response = await client.put("/flaky/1", files={"log": streamed(NOTES)})
    assert response.status_code == 503
    assert [attempt.describe().split(" ", 2)[2] for attempt in response.attempts[1:]] == [
        "not sent: body cannot be replayed"
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_large_file_part_streams(
    uploads: Uploads, tmp_path: Path, transport: TransportName
) -> None:
    size = 32 * 1024 * 1024
    path = tmp_path / "archive.tar"
    block = random.Random(5).randbytes(1024 * 1024)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
    async with make_client(transport, uploads.base, timeout=GENEROUS) as client:
        await client.put("/echo", content=b"warm up the connection")
        tracemalloc.start()
        try:
            with path.open("rb") as archive:
                response = await client.post("/form", files={"archive": archive})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    (part,) = response.raise_for_status().json()["parts"]
    assert (part["filename"], part["content_type"], part["size"]) == (
        "archive.tar",
        "application/x-tar",
        size,
    )
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated at the peak"


# ------------------------------------------------------------------ the other front doors


async def test_the_blocking_and_futures_clients_upload_the_same(
    uploads: Uploads, photo: Path
) -> None:
    # The front doors block their thread: they run in one, the server on this loop.
    def blocking() -> list[dict[str, Any]]:
        with microcall.Client(uploads.base, timeout=GENEROUS) as client:
            with photo.open("rb") as cover:
                answers = [
                    client.put("/echo", content=streamed(PHOTO)).json(),
                    client.put("/echo", content=cover).json(),
                    client.post("/form", files={"cover": ("c.jpg", cover)}, data={"a": "1"}).json(),
                ]

            async def async_chunks() -> Any:
                yield PHOTO

            answers.append(client.put("/echo", content=async_chunks()).json())
            return answers

    def futures() -> list[dict[str, Any]]:
        with (
            microcall.FuturesClient(uploads.base, timeout=GENEROUS) as client,
            photo.open("rb") as cover,
        ):
            # Started together: the three read the one file side by side.
            started = [
                client.put("/echo", content=streamed(PHOTO)),
                client.put("/echo", content=cover),
                client.post("/form", files={"cover": ("c.jpg", cover)}, data={"a": "1"}),
            ]
            return [future.result().json() for future in started]

    for answers in (await asyncio.to_thread(blocking), await asyncio.to_thread(futures)):
        assert answers[0]["sha256"] == answers[1]["sha256"] == sha256(PHOTO)
        assert answers[0]["transfer_encoding"] == "chunked"
        assert answers[1]["content_length"] == str(len(PHOTO))
        assert [part["sha256"] for part in answers[2]["parts"]] == [sha256(b"1"), sha256(PHOTO)]
        if len(answers) > 3:
            assert answers[3]["sha256"] == sha256(PHOTO)


async def test_the_blocking_client_reports_a_failing_body_as_the_others_do(
    uploads: Uploads,
) -> None:
    def failing() -> Iterator[bytes]:
        yield b"part"
        raise OSError("the source broke")

    def call() -> microcall.RequestBodyError:
        with microcall.Client(uploads.base, timeout=GENEROUS) as client:
            try:
                client.put("/echo", content=failing())
            except microcall.RequestBodyError as error:
                return error
        raise AssertionError("no error")

    error = await asyncio.to_thread(call)
    assert "raised OSError('the source broke')" in str(error)
