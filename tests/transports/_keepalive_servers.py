"""Small HTTP/1.1 servers on 127.0.0.1 that close keep-alive connections the way real ones do.

Each answers ``200`` with the request's body (or ``b"ok"``) and keeps the
connection open (no ``Connection: close``), then misbehaves as told:

- ``close_after``: close every connection this many seconds after its first
  answer, answering nothing more on it (a server that closes after every
  answer without saying so);
- ``idle_close``: close a connection idle this long (a keep-alive timeout);
- ``answer_once``: answer the first request of each connection, then close
  the connection, unanswered, when the next request arrives (the race with
  an idle close, made certain);
- ``fail_every``: answer every n-th request with ``500`` and close (uvicorn's
  habit);
- ``reset_every``: every n-th connection is reset (RST) where the others
  are closed.

``seen`` counts the requests that arrived, by body (a POST's id), so a test
can check that nothing was sent twice; ``connections`` counts connections.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    close_after: float | None = None
    idle_close: float | None = None
    answer_once: bool = False
    fail_every: int = 0
    reset_every: int = 0
    body_size: int = 0  # answer with this many bytes instead of the echo
    chunked: bool = False


@dataclass
class Counts:
    seen: collections.Counter[bytes] = field(default_factory=collections.Counter)
    requests: int = 0
    connections: int = 0


class _Connection(asyncio.Protocol):
    def __init__(self, server: KeepAliveServer) -> None:
        self.server = server
        self.buffer = b""
        self.answered = 0
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        counts = self.server.counts
        counts.connections += 1
        self.number = counts.connections
        self.server.open.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.server.open.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self._request(body)

    def _request(self, body: bytes) -> None:
        assert self.transport is not None
        behaviour, counts = self.server.behaviour, self.server.counts
        counts.requests += 1
        counts.seen[body] += 1
        if self.answered and behaviour.close_after is not None:
            return  # closing: nothing more is answered
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.answered and behaviour.answer_once:
            self._close()
            return
        self.answered += 1
        failing = behaviour.fail_every and counts.requests % behaviour.fail_every == 0
        status = b"500 Internal Server Error" if failing else b"200 OK"
        content = b"x" * behaviour.body_size if behaviour.body_size else (body or b"ok")
        if behaviour.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(content[i : i + 65536]), content[i : i + 65536])
                for i in range(0, len(content), 65536)
            )
            payload += b"0\r\n\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % len(content)
            payload = content
        self.transport.write(b"HTTP/1.1 " + status + b"\r\n" + framing + b"\r\n" + payload)
        if failing:
            self._close()
        elif behaviour.close_after is not None:
            self._close_in(behaviour.close_after)
        elif behaviour.idle_close is not None:
            self._close_in(behaviour.idle_close)

    def _close_in(self, seconds: float) -> None:
        if seconds <= 0:
            self._close()
        else:
            self.timer = asyncio.get_running_loop().call_later(seconds, self._close)

    def _close(self) -> None:
        assert self.transport is not None
        every = self.server.behaviour.reset_every
        if every and self.number % every == 0:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()


class KeepAliveServer:
    """``async with KeepAliveServer(Behaviour(...)) as server:`` then call ``server.url``."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.counts = Counts()
        self.open: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> KeepAliveServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self.open):
            transport.abort()
        await self._server.wait_closed()


class ThreadedServer:
    """A KeepAliveServer on its own event loop in a thread, so its timing is not the client's.

    ``with ThreadedServer(Behaviour(...)) as server:``; ``server.url``, ``server.counts``.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.server = KeepAliveServer(behaviour)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def counts(self) -> Counts:
        return self.server.counts

    def __enter__(self) -> ThreadedServer:
        started = threading.Event()

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with self.server:
                started.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(serve(),))
        self._thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._thread is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()
