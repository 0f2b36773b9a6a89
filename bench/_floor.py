"""The floor: the least an asyncio HTTP/1.1 client can cost, for the benchmark's reference rows.

A keep-alive client in a few dozen lines: llhttp (httptools) parses, an
``asyncio.Protocol`` per connection, a list of idle connections, GET only,
no timeouts, no error handling beyond giving up a connection. It is not a
client anyone should use; it is how far below aiohttp a real one can go,
so the table shows how close microcall's own transport comes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httptools
from yarl import URL

AsyncCall = Callable[[], Coroutine[Any, Any, int]]


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.body: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())


@contextlib.asynccontextmanager
async def floor_client(url: str) -> AsyncIterator[AsyncCall]:
    """A GET of ``url`` per call, over a pool of keep-alive connections."""
    parsed = URL(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 80
    head = f"GET {parsed.raw_path_qs} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    opened: list[_Conn] = []

    async def call() -> int:
        while idle:
            conn = idle.pop()
            if not conn.lost:
                break
        else:
            _, conn = await loop.create_connection(_Conn, host, port)
            opened.append(conn)
        conn.waiter = loop.create_future()
        conn.body.clear()
        assert conn.transport is not None
        conn.transport.write(head)
        status = await conn.waiter
        b"".join(conn.body)
        idle.append(conn)
        return status

    try:
        yield call
    finally:
        for conn in opened:
            if conn.transport is not None:
                conn.transport.close()
