"""A real aiohttp server on 127.0.0.1 that streams, for the streamed-response tests.

Every route's body is known in advance (``body_of``), so a test can check
every byte. The server counts what a test needs to see from its side: the
connections open now (a closed stream is a closed connection), the
connections that ever carried a request (a reused connection carries two),
and the streaming handlers that stopped because the client went away.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

import microcall
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport

# Long enough for any step of a test on a loaded machine; tests never wait it out.
PATIENCE = 10.0

SSE_BODY = (
    # A comment, a named event with two data lines, CRLF line endings, an id,
    # a retry, an event with no data (never dispatched), a default event.
    b": hello\r\n"
    b"event: tick\r\ndata: first line\r\ndata: second line\r\nid: 1\r\nretry: 1500\r\n\r\n"
    b"event: nothing\r\n\r\n"
    b'data: {"n": 2}\r\n\r\n'
)


def body_of(size: int) -> bytes:
    """``size`` bytes that differ from place to place, so a lost or doubled piece shows."""
    pattern = bytes(range(251))
    return (pattern * (size // 251 + 1))[:size]


def transports() -> dict[str, Callable[..., Any]]:
    """Each transport, made with the given keyword arguments (limits=...)."""
    made: dict[str, Callable[..., Any]] = {
        "h1": lambda **kw: H1Transport(**kw),
        "aiohttp": lambda **kw: AiohttpTransport(**kw),
    }
    try:
        from microcall.transports.httpx import HttpxTransport
    except ImportError:  # pragma: no cover - httpx is in the dev extras
        return made
    made["httpx"] = lambda **kw: HttpxTransport(http2=False, **kw)
    return made


def in_use(transport: Any) -> int:
    """Connections the transport's pool has handed out and not had back."""
    if isinstance(transport, H1Transport):
        pool = transport._pool
        return 0 if pool is None else pool._in_use
    if isinstance(transport, AiohttpTransport):
        session = transport._session
        return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]
    client = transport._client
    if client is None:
        return 0
    return sum(1 for conn in client._transport._pool.connections if not conn.is_idle())


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` holds (polling), or fail saying ``what`` never happened."""
    give_up = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


class StreamServer:
    """The routes (see each handler) and the counts; ``async with StreamServer() as server``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.hits: Counter[str] = Counter()
        self.streams_cut = 0  # streaming handlers that ended because the client left
        self.peers: list[tuple[str, int]] = []  # the client address of every request
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def open_connections(self) -> int:
        assert self._runner is not None
        assert self._runner.server is not None
        return len(self._runner.server.connections)

    async def __aenter__(self) -> StreamServer:
        app = web.Application()
        app.router.add_get("/chunks/{count}/{size}", self._chunks)
        app.router.add_get("/length/{size}", self._length)
        app.router.add_get("/gated", self._gated)
        app.router.add_get("/endless", self._endless)
        app.router.add_get("/gzip/{size}", self._gzip)
        app.router.add_get("/sse", self._sse)
        app.router.add_get("/flaky/{key}/{kind}", self._flaky)
        app.router.add_get("/slow-head/{key}", self._slow_head)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        self.hits[request.path] += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.append(peer[:2])

    async def _length(self, request: web.Request) -> web.Response:
        """``body_of(size)`` with a Content-Length (``?fresh=1``: fresh for a minute)."""
        self._seen(request)
        headers = {"Cache-Control": "max-age=60"} if request.query.get("fresh") else {}
        return web.Response(body=body_of(int(request.match_info["size"])), headers=headers)

    async def _gated(self, request: web.Request) -> web.StreamResponse:
        """``first``, then ``rest`` only once the test opened ``gate``: proof of streaming."""
        self._seen(request)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.wait_for(self.gate.wait(), PATIENCE)
        await response.write(b"rest")
        await response.write_eof()
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """64 KiB pieces until the client leaves (counted in ``streams_cut``)."""
        self._seen(request)
        return await self._endless_body(request)

    async def _endless_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(b"e" * 65536)
                await asyncio.sleep(0.001)
        except (ConnectionError, asyncio.CancelledError):
            self.streams_cut += 1
            raise

    async def _gzip(self, request: web.Request) -> web.Response:
        """``body_of(size)``, gzip-compressed when the client accepts it."""
        self._seen(request)
        response = web.Response(body=body_of(int(request.match_info["size"])))
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        """``SSE_BODY`` cut into 7-byte pieces, each sent apart."""
        self._seen(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(SSE_BODY), 7):
            await response.write(SSE_BODY[start : start + 7])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def _flaky(self, request: web.Request) -> web.StreamResponse:
        """First call: 503 (``kind`` small: a whole short body; ``stuck``: a body that never
        ends); then 200 with ``body_of(100_000)``, chunked."""
        self._seen(request)
        key = f"flaky/{request.match_info['key']}"
        self.hits[key] += 1
        if self.hits[key] == 1:
            if request.match_info["kind"] == "small":
                return web.Response(status=503, text="try again")
            response = web.StreamResponse(status=503)
            await response.prepare(request)
            await response.write(b"busy...")
            try:
                await asyncio.sleep(PATIENCE * 3)
            except asyncio.CancelledError:
                self.streams_cut += 1
                raise
            return response
        return await self._chunks_of(request, 10, 10_000)

    async def _slow_head(self, request: web.Request) -> web.StreamResponse:
        """First call: the head after ``delay`` seconds (query), then endless; others: endless now.

        A client that leaves before the head or mid-body counts in ``streams_cut``.
        """
        self._seen(request)
        key = f"slow-head/{request.match_info['key']}"
        self.hits[key] += 1
        if self.hits[key] == 1:
            try:
                await asyncio.sleep(float(request.query.get("delay", PATIENCE * 3)))
            except asyncio.CancelledError:
                self.streams_cut += 1
                raise
        return await self._endless_body(request)

    async def _chunks(self, request: web.Request) -> web.StreamResponse:
        """``count`` chunks of ``size`` bytes, chunked encoding: ``body_of(count * size)``."""
        self._seen(request)
        count, size = int(request.match_info["count"]), int(request.match_info["size"])
        return await self._chunks_of(request, count, size)

    async def _chunks_of(self, request: web.Request, count: int, size: int) -> web.StreamResponse:
        body = body_of(count * size)
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(body), size):
            await response.write(body[start : start + size])
        await response.write_eof()
        return response


def client(server: StreamServer, transport: Any, **options: Any) -> microcall.AsyncClient:
    return microcall.AsyncClient(server.url, transport=transport, **options)
