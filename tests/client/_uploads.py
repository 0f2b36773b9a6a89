"""A real aiohttp server for the upload tests: it reads what arrives and says what it was.

Every handler streams the body (never holding it whole, so a 64 MiB upload
costs the server little memory) and answers JSON describing it:

- ``/echo``: ``size``, ``sha256`` and the framing the request came with
  (``transfer_encoding``, ``content_length``, ``content_type``);
- ``/flaky/{n}``: the same, but ``503`` to the first ``n`` requests of a test
  (each body is recorded in ``Uploads.bodies``, so a test can see what every
  attempt sent);
- ``/slow``: the same after ``Uploads.delay`` seconds (hedges race it);
- ``/form``: the parts of a multipart/form-data body as aiohttp's reader
  parses them, streaming (name, filename, content type, size, sha256);
- ``/werkzeug``: the same body as Werkzeug's parser reads it, a second opinion;
- ``/refuse``: ``413`` at once, without reading the body;
- ``/moved``: ``307`` to ``/echo`` (the body must go again).

``Uploads.requests`` counts the requests that reached a handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp import BodyPartReader, web
from werkzeug.formparser import parse_form_data

import microcall
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport
from tests.conftest import Serve

# The aiohttp server's own cap on a request body (1 MiB by default) is lifted:
# the large uploads are what is tested.
NO_LIMIT = 2**40

TransportName = Literal["h1", "aiohttp", "httpx"]
TRANSPORTS: tuple[TransportName, ...] = ("h1", "aiohttp", "httpx")
# How long past its deadline a call may end: generous, the machine is shared.
MARGIN = 2.0
# Retries that do not wait: the tests are about bodies, not backoff.
QUICK_BACKOFF = microcall.Backoff(base=0.001, cap=0.005)


def make_client(transport: TransportName, base_url: str, **options: Any) -> microcall.AsyncClient:
    """An AsyncClient on the named transport (as tests/faults/scenarios.py makes them)."""
    kinds = {"h1": H1Transport, "aiohttp": AiohttpTransport, "httpx": HttpxTransport}
    return microcall.AsyncClient(base_url, transport=kinds[transport](), **options)


async def wait_until(condition: Callable[[], bool], *, within: float = 5.0) -> bool:
    """Poll ``condition()`` until it is true or ``within`` seconds pass."""
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(0.01)
    return True


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Uploads:
    """What the server saw."""

    base: str = ""
    requests: int = 0
    bodies: list[str] = field(default_factory=list)  # sha256 of each /flaky and /slow body
    failed: dict[str, int] = field(default_factory=dict)  # 503s answered, by path
    delay: float = 0.0


async def _read(request: web.Request) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return {
        "size": size,
        "sha256": digest.hexdigest(),
        "transfer_encoding": request.headers.get("Transfer-Encoding"),
        "content_length": request.headers.get("Content-Length"),
        "content_type": request.headers.get("Content-Type"),
    }


def upload_app(uploads: Uploads) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        uploads.requests += 1
        return web.json_response(await _read(request))

    async def flaky(request: web.Request) -> web.Response:
        uploads.requests += 1
        seen = await _read(request)
        uploads.bodies.append(seen["sha256"])
        path = request.path
        if uploads.failed.get(path, 0) < int(request.match_info["failures"]):
            uploads.failed[path] = uploads.failed.get(path, 0) + 1
            return web.json_response(seen, status=503)
        return web.json_response(seen)

    async def slow(request: web.Request) -> web.Response:
        uploads.requests += 1
        first = uploads.requests == 1
        seen = await _read(request)
        uploads.bodies.append(seen["sha256"])
        if first:
            await asyncio.sleep(uploads.delay)
        return web.json_response(seen)

    async def form(request: web.Request) -> web.Response:
        uploads.requests += 1
        parts = []
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            digest = hashlib.sha256()
            size = 0
            while chunk := await part.read_chunk():
                digest.update(chunk)
                size += len(chunk)
            parts.append(
                {
                    "name": part.name,
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "size": size,
                    "sha256": digest.hexdigest(),
                }
            )
        return web.json_response(
            {
                "parts": parts,
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
                "content_length": request.headers.get("Content-Length"),
            }
        )

    async def werkzeug(request: web.Request) -> web.Response:
        uploads.requests += 1
        raw = await request.read()
        return web.json_response(_werkzeug_view(raw, request.headers["Content-Type"]))

    async def refuse(request: web.Request) -> web.Response:
        uploads.requests += 1
        return web.Response(status=413, text="too large")

    async def moved(request: web.Request) -> web.Response:
        uploads.requests += 1
        raise web.HTTPTemporaryRedirect("/echo")

    app = web.Application(client_max_size=NO_LIMIT)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/flaky/{failures:\\d+}", flaky)
    app.router.add_route("*", "/slow", slow)
    app.router.add_post("/form", form)
    app.router.add_post("/werkzeug", werkzeug)
    app.router.add_post("/refuse", refuse)
    app.router.add_route("*", "/moved", moved)
    return app


def _werkzeug_view(raw: bytes, content_type: str) -> dict[str, Any]:
    """The same form as Werkzeug reads it: fields as lists, files as (filename, type, sha256)."""
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    _, fields, files = parse_form_data(environ)
    return {
        "fields": {name: fields.getlist(name) for name in fields},
        "files": {
            name: [
                [stored.filename, stored.content_type, sha256(stored.read())]
                for stored in files.getlist(name)
            ]
            for name in files
        },
    }


@pytest.fixture(name="uploads")
async def uploads_fixture(serve: Serve) -> Uploads:
    """The upload server, running on 127.0.0.1 for one test (``serve`` stops it)."""
    state = Uploads()
    state.base = await serve(upload_app(state))
    return state
