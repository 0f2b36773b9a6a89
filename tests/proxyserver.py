"""A small forward proxy for tests, on 127.0.0.1 port 0: absolute-form forwarding and CONNECT.

It does what a real forward proxy does, no more:

- ``GET http://host:port/path HTTP/1.1``: the request goes to the target
  in origin form (``GET /path``) on a new connection with ``Connection:
  close``, without the ``Proxy-*`` headers, and the answer comes back; the
  client's connection is kept alive when the answer has a Content-Length;
- ``CONNECT host:port``: ``200`` once the target is connected, then bytes
  are copied both ways until either side closes;
- ``auth=("user", "password")``: a request without that Basic
  ``Proxy-Authorization`` is answered ``407`` with ``Proxy-Authenticate``;
- ``refuse_connect=True``: CONNECT is answered ``403``;
- ``close_after_answer=True``: a client connection carrying forwarded
  requests is closed after its first answer, without a word (what a proxy
  with a short idle timeout does to a keep-alive connection).

Every request head it received is kept in ``seen`` (method, target,
headers), for tests to assert what went to the proxy. ``closed_port()``
gives a port nothing listens on: a proxy that refuses connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from dataclasses import dataclass, field

from yarl import URL

MAX_HEAD = 64 * 1024


@dataclass
class Seen:
    """A request head the proxy received."""

    method: str
    target: str
    headers: dict[str, str]


@dataclass
class ForwardProxy:
    """The proxy; ``async with ForwardProxy(...) as proxy`` runs it, ``proxy.url`` is where."""

    auth: tuple[str, str] | None = None
    refuse_connect: bool = False
    close_after_answer: bool = False
    seen: list[Seen] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, with the credentials it wants when it wants some."""
        if self.auth is None:
            return f"http://127.0.0.1:{self.port}"
        user, password = self.auth
        return str(
            URL.build(scheme="http", host="127.0.0.1", port=self.port, user=user, password=password)
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        """Stop listening and close every connection; the handlers end as their reads do."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> ForwardProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # one client connection

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                method, target, headers = head
                self.seen.append(Seen(method, target, headers))
                if not self._authorized(headers):
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="tests"\r\nContent-Length: 0\r\n\r\n'
                    )
                    await _skip_body(reader, headers)
                    await writer.drain()
                    continue
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                if not await self._forward(method, target, headers, reader, writer):
                    return
                if self.close_after_answer:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.auth is None:
            return True
        expected = base64.b64encode(":".join(self.auth).encode()).decode()
        return headers.get("proxy-authorization") == f"Basic {expected}"

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.refuse_connect:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        self._writers.add(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            up_writer.close()
            self._writers.discard(up_writer)

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Forward one absolute-form request; whether the client's connection may go on."""
        url = URL(target, encoded=True)
        if not url.is_absolute():
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return False
        body = await _skip_body(reader, headers)
        up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
        lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
        for name, value in headers.items():
            if not name.startswith("proxy-") and name != "connection":
                lines.append(f"{name}: {value}")
        lines.append("connection: close")
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        answer = await up_reader.read()  # to the close: Connection: close
        up_writer.close()
        writer.write(answer)
        await writer.drain()
        answer_head = answer.split(b"\r\n\r\n", 1)[0].lower()
        return b"content-length:" in answer_head and b"chunked" not in answer_head


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(raw) > MAX_HEAD:
        return None
    first, *rest = raw.decode("latin-1").split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers: dict[str, str] = {}
    for line in rest:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _skip_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.write_eof()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
