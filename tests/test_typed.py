"""Typed responses: bodies validated into pydantic models, typed errors, models sent as JSON."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import date

import pytest
from aiohttp import web
from pydantic import BaseModel, Field

from microcall import AsyncClient, CallError, Client, UsageError
from microcall._typed import _adapters
from microcall.cache import ResponseCache
from microcall.errors import ResponseValidationError
from microcall.testing import MockTransport, Reply

Serve = Callable[[web.Application], Awaitable[str]]


class Author(BaseModel):
    name: str


class Book(BaseModel):
    id: int
    title: str
    published: date
    author: Author
    page_count: int = Field(alias="pageCount")


BOOK = {
    "id": 1,
    "title": "Dune",
    "published": "1965-08-01",
    "author": {"name": "Frank Herbert"},
    "pageCount": 412,
}


def client_answering(*replies: Reply, **options: object) -> tuple[AsyncClient, MockTransport]:
    transport = MockTransport(list(replies))
    return AsyncClient("http://svc:8080", transport=transport, **options), transport  # type: ignore[arg-type]


async def test_json_validates_into_a_model() -> None:
    client, _ = client_answering(Reply(200, json=BOOK))
    async with client:
        response = await client.get("/books/1")
    book = response.json(model=Book)
    assert isinstance(book, Book)
    assert book.author.name == "Frank Herbert"
    assert book.published == date(1965, 8, 1)
    assert book.page_count == 412


async def test_json_validates_lists_and_other_type_forms() -> None:
    client, _ = client_answering(
        Reply(200, json=[BOOK, {**BOOK, "id": 2}]), Reply(200, json={"a": BOOK})
    )
    async with client:
        books = (await client.get("/books")).json(model=list[Book])
        by_key = (await client.get("/shelf")).json(model=dict[str, Book])
    assert [book.id for book in books] == [1, 2]
    assert by_key["a"].title == "Dune"


async def test_a_body_that_does_not_fit_is_a_typed_error_with_body_and_details() -> None:
    wrong = {**BOOK, "id": "one", "author": {}}
    client, _ = client_answering(Reply(200, json=wrong))
    async with client:
        response = await client.get("/books/1")
    with pytest.raises(ResponseValidationError) as caught:
        response.json(model=Book)
    error = caught.value
    assert isinstance(error, CallError)
    assert error.body == response.content
    assert error.response is response
    assert error.model is Book
    assert error.request is response.request
    assert error.attempts == response.attempts
    assert {(tuple(detail["loc"]), detail["type"]) for detail in error.errors} == {
        (("id",), "int_parsing"),
        (("author", "name"), "missing"),
    }
    assert "does not fit Book" in str(error)
    assert "2 errors" in str(error)


async def test_a_list_element_that_does_not_fit_names_its_index() -> None:
    client, _ = client_answering(Reply(200, json=[BOOK, {"id": 2}]))
    async with client:
        response = await client.get("/books")
    with pytest.raises(ResponseValidationError) as caught:
        response.json(model=list[Book])
    assert all(detail["loc"][0] == 1 for detail in caught.value.errors)
    assert "list[" in str(caught.value)


async def test_a_body_that_is_not_json_is_a_typed_error_too() -> None:
    client, _ = client_answering(Reply(200, content=b"<html>oops</html>"))
    async with client:
        response = await client.get("/books/1")
    with pytest.raises(ResponseValidationError) as caught:
        response.json(model=Book)
    assert [detail["type"] for detail in caught.value.errors] == ["json_invalid"]
    assert caught.value.body == b"<html>oops</html>"


async def test_json_with_a_model_takes_no_loads_arguments() -> None:
    client, _ = client_answering(Reply(200, json=BOOK))
    async with client:
        response = await client.get("/books/1")
    with pytest.raises(UsageError):
        response.json(model=Book, parse_float=float)  # type: ignore[call-overload]
    assert response.json(parse_int=str)["id"] == "1"


async def test_response_model_on_the_call() -> None:
    client, _ = client_answering(
        Reply(200, json=BOOK), Reply(404, json={"error": "no"}), Reply(200)
    )
    async with client:
        found = await client.get("/books/1", response_model=Book)
        missing = await client.get("/books/2", response_model=Book)
        head = await client.head("/books/1", response_model=Book)
    assert isinstance(found.parsed, Book)
    assert missing.status_code == 404
    assert missing.parsed is None  # only a 2xx body is validated
    assert head.parsed is None


async def test_response_model_raises_at_the_call() -> None:
    client, _ = client_answering(Reply(200, json={"id": 1}))
    async with client:
        with pytest.raises(ResponseValidationError) as caught:
            await client.get("/books/1", response_model=Book)
    assert caught.value.body == b'{"id": 1}'
    assert len(caught.value.attempts) == 1


async def test_response_model_with_a_cached_answer() -> None:
    client, transport = client_answering(
        Reply(200, json=BOOK, headers={"Cache-Control": "max-age=60"}), cache=ResponseCache()
    )
    async with client:
        await client.get("/books/1", response_model=Book)
        hit = await client.get("/books/1", response_model=Book)
    assert hit.from_cache
    assert isinstance(hit.parsed, Book)
    assert len(transport.sent) == 1


async def test_a_model_is_sent_as_json_with_its_aliases() -> None:
    client, transport = client_answering(Reply(201), Reply(201))
    book = Book.model_validate(BOOK)
    async with client:
        await client.post("/books", json=book)
        await client.post("/books", json={"books": [book], "count": 1})
    first, second = (sent.request for sent in transport.sent)
    assert first.headers["Content-Type"] == "application/json"
    assert first.body is not None
    assert Book.model_validate_json(first.body) == book
    assert b'"pageCount":412' in first.body
    assert b'"published":"1965-08-01"' in first.body
    assert second.body is not None
    assert second.body.startswith(b'{"books":[{"id":1,')


async def test_a_value_json_cannot_hold_is_refused_before_sending() -> None:
    client, _ = client_answering()
    async with client:
        with pytest.raises(UsageError, match="not JSON serializable"):
            await client.post("/books", json={"when": object()})


async def test_round_trip_through_a_real_server(serve: Serve) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response([await request.json()])

    app = web.Application()
    app.router.add_post("/books", echo)
    book = Book.model_validate(BOOK)
    async with AsyncClient(await serve(app)) as client:
        response = await client.post("/books", json=book, response_model=list[Book])
    assert response.parsed == [book]


def test_the_blocking_client_takes_a_response_model() -> None:
    transport = MockTransport([Reply(200, json=BOOK)])
    with Client("http://svc:8080", transport=transport) as client:
        response = client.get("/books/1", response_model=Book)
    assert response.parsed.title == "Dune"


def test_adapters_are_built_once_per_type() -> None:
    from microcall._typed import _adapter

    assert _adapter(list[Book]) is _adapter(list[Book])
    assert list[Book] in _adapters


def test_without_pydantic_a_model_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)
    transport = MockTransport([Reply(200, json=[1])])
    with Client("http://svc:8080", transport=transport) as client:
        response = client.get("/numbers")
    with pytest.raises(UsageError, match=r"pip install 'microcall\[pydantic\]'"):
        response.json(model=list[complex])


def test_importing_microcall_does_not_import_pydantic() -> None:
    code = "import sys, microcall, microcall.cache; print('pydantic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
