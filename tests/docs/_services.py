"""The services the documentation's examples talk to, run for real on 127.0.0.1.

The docs name services as a reader's deployment would (``http://catalog:8080``,
``10.0.0.7:50051``, ``redis://cache:6379/0``). Here each name is served by a
real server on a loopback port 0: aiohttp apps for the HTTP services (one of
them over TLS with a throwaway CA), grpc.aio servers running the example
Recommendations service, and redis-server. ``HOSTS`` maps every name the docs
use to where it really is; the runner puts the real address in place of the
name before running a block. A block that names a service missing from the
table fails to connect, which is the point: a new name must be added here.

The servers live on a loop of their own in a background thread, so the
examples can use the blocking ``Client`` (which refuses to run inside an
event loop) as well as ``AsyncClient``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio
import trustme
from aiohttp import BodyPartReader, web
from examples.recommendations.server import RecommendationService

from microcall.examples_pb.recommendations_pb2_grpc import add_RecommendationsServicer_to_server
from tests.proxyserver import ForwardProxy, closed_port

BOOKS = [
    {"id": 1, "title": "Dune", "author": "Frank Herbert"},
    {"id": 2, "title": "Hyperion", "author": "Dan Simmons"},
]


def _catalog() -> web.Application:
    async def books(request: web.Request) -> web.Response:
        return web.json_response(BOOKS, headers={"Cache-Control": "max-age=30"})

    async def book(request: web.Request) -> web.Response:
        number = int(request.match_info["id"])
        found = next((book for book in BOOKS if book["id"] == number), None)
        if found is None:
            return web.json_response({"error": "no such book"}, status=404)
        return web.json_response(found, headers={"Cache-Control": "max-age=30"})

    async def anything(request: web.Request) -> web.Response:
        if request.can_read_body:
            await request.read()
        return web.json_response({"path": request.path, "price": 7})

    app = web.Application()
    app.router.add_get("/books", books)
    app.router.add_get("/books/{id:\\d+}", book)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def _files() -> web.Application:
    """Where docs/uploads.md sends its uploads: it says what arrived, streaming it as it comes."""

    async def store(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        framing = "chunked" if request.headers.get("Transfer-Encoding") else "length"
        return web.json_response({"size": size, "sha256": digest.hexdigest(), "framing": framing})

    async def forms(request: web.Request) -> web.Response:
        fields: dict[str, list[str]] = {}
        files: dict[str, dict[str, Any]] = {}
        async for part in await request.multipart():
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            if part.filename is None:
                fields.setdefault(part.name or "", []).append(data.decode())
            else:
                files[part.name or ""] = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "size": len(data),
                }
        return web.json_response({"fields": fields, "files": files})

    async def unavailable(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "try later"}, status=503)

    app = web.Application(client_max_size=2**40)
    app.router.add_route("*", "/objects/{name}", store)
    app.router.add_post("/forms", forms)
    app.router.add_route("*", "/unavailable", unavailable)
    return app


def _streams() -> web.Application:
    """docs/streaming.md's services: a CSV export sent in pieces, and a few server-sent events."""

    async def export(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
        await response.prepare(request)
        await response.write(b"id,title\n")
        for start in range(0, 10_000, 500):
            rows = "".join(f"{n},Book {n}\n" for n in range(start, start + 500))
            await response.write(rows.encode())
        await response.write_eof()
        return response

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": prices follow\n\nretry: 2000\n\n")
        for number, price in enumerate((7, 8, 6), start=1):
            block = f'id: {number}\nevent: price\ndata: {{"book": 1, "price": {price}}}\n\n'
            await response.write(block.encode())
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/export.csv", export)
    app.router.add_get("/events", events)
    return app


def _accounts() -> web.Application:
    """Sessions by cookie, Basic and Bearer credentials, and a token that can be renewed."""
    tokens = {"current": "token-1"}

    async def login(request: web.Request) -> web.Response:
        response = web.json_response({"welcome": request.query.get("user", "guest")})
        response.set_cookie("session", f"session-of-{request.query.get('user', 'guest')}")
        return response

    async def sign_in(request: web.Request) -> web.Response:
        # A login form's way: the session is set on a redirect to the account page.
        response = web.Response(status=302, headers={"Location": "/me"})
        response.set_cookie("session", f"session-of-{request.query.get('user', 'guest')}")
        return response

    async def me(request: web.Request) -> web.Response:
        session = request.cookies.get("session")
        if session is None:
            return web.json_response({"error": "log in first"}, status=401)
        return web.json_response({"session": session})

    async def basic(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(b"alice:wonderland").decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "who are you?"}, status=401)
        return web.json_response({"user": "alice"})

    async def token(request: web.Request) -> web.Response:
        # Each request renews it: the previous token stops working.
        tokens["current"] = f"token-{int(tokens['current'].rsplit('-', 1)[1]) + 1}"
        return web.json_response({"access_token": tokens["current"]})

    async def orders(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {tokens['current']}":
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return web.json_response([{"order": 1, "book": "Dune"}])

    async def headers(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    app = web.Application()
    app.router.add_get("/login", login)
    app.router.add_get("/sign-in", sign_in)
    app.router.add_get("/me", me)
    app.router.add_get("/basic", basic)
    app.router.add_post("/token", token)
    app.router.add_get("/orders", orders)
    app.router.add_get("/headers", headers)
    return app


@dataclass
class Services:
    """Running servers and the table from the docs' names to their real addresses."""

    hosts: dict[str, str] = field(default_factory=dict)
    ca_file: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _closers: list[Any] = field(default_factory=list)

    def rewrite(self, code: str) -> str:
        # Longest names first: "http://catalog:8080" before "catalog".
        for name in sorted(self.hosts, key=len, reverse=True):
            code = code.replace(name, self.hosts[name])
        return code


async def _http(app: web.Application, ssl_context: Any = None) -> tuple[str, web.AppRunner]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return str(port), runner


async def _grpc() -> tuple[str, grpc.aio.Server]:
    server = grpc.aio.server()
    add_RecommendationsServicer_to_server(RecommendationService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return str(port), server


async def _start(services: Services, redis_port: int, workdir: Path) -> None:
    hosts = services.hosts
    port, runner = await _http(_catalog())
    services._closers.append(runner.cleanup)
    hosts["http://catalog:8080"] = f"http://127.0.0.1:{port}"
    hosts["http://catalog"] = f"http://127.0.0.1:{port}"
    hosts["http://prices"] = f"http://127.0.0.1:{port}"
    port, runner = await _http(_accounts())
    services._closers.append(runner.cleanup)
    hosts["http://accounts:8080"] = f"http://127.0.0.1:{port}"
    # Discovery resolves its name through DNS: localhost is a real name here.
    hosts["http://catalog.shop.svc:8080"] = f"http://localhost:{port}"
    port, runner = await _http(_files())
    services._closers.append(runner.cleanup)
    hosts["http://files:8080"] = f"http://127.0.0.1:{port}"
    for replica in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        port, runner = await _http(_catalog())
        services._closers.append(runner.cleanup)
        hosts[f"http://{replica}:8080"] = f"http://127.0.0.1:{port}"

    authority = trustme.CA()
    certificate = authority.issue_cert("catalog", "127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    port, runner = await _http(_catalog(), ssl_context=server_context)
    services._closers.append(runner.cleanup)
    ca_file = workdir / "internal-ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    hosts["https://catalog:8443"] = f"https://127.0.0.1:{port}"
    hosts["/etc/ssl/internal-ca.pem"] = str(ca_file)

    for target in ("10.0.0.7:50051", "10.0.0.8:50051"):
        port, server = await _grpc()
        services._closers.append(lambda server=server: server.stop(None))
        hosts[target] = f"127.0.0.1:{port}"
    hosts["redis://cache:6379"] = f"redis://127.0.0.1:{redis_port}"

    # Forward proxies (docs/proxies.md): an open one, one that wants the
    # credentials the page gives, and an address where nothing listens.
    for name, proxy in (
        ("proxy.internal:3128", ForwardProxy()),
        ("proxy.corp:8080", ForwardProxy(auth=("books-svc", "s3cret"))),
    ):
        await proxy.start()
        services._closers.append(proxy.close)
        hosts[name] = proxy.address
    hosts["proxy.down:3128"] = f"127.0.0.1:{closed_port()}"

    port, runner = await _http(_streams())
    services._closers.append(runner.cleanup)
    hosts["http://exports:8080"] = f"http://127.0.0.1:{port}"
    hosts["http://events:8080"] = f"http://127.0.0.1:{port}"


@contextmanager
def running_services(redis_port: int, workdir: Path) -> Iterator[Services]:
    """Start every service the docs name; stop them all on exit."""
    services = Services()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="docs-services", daemon=True)
    thread.start()
    services._loop = loop
    try:
        started: Future[None] = asyncio.run_coroutine_threadsafe(
            _start(services, redis_port, workdir), loop
        )
        started.result(timeout=30)
        yield services
    finally:

        async def stop() -> None:
            for close in reversed(services._closers):
                await close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
