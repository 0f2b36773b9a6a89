"""A minimal HTTP/1.1 client on a raw socket, for header bytes no real client would send."""

from __future__ import annotations

import asyncio

from yarl import URL


async def raw_get(
    base: str, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` with exactly these header lines; (status, headers, body)."""
    url = URL(base)
    assert url.host is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        lines = [f"GET {path} HTTP/1.1".encode(), f"Host: {url.host}:{url.port}".encode()]
        lines += [name + b": " + value for name, value in headers or []]
        lines += [b"Connection: close", b"", b""]
        writer.write(b"\r\n".join(lines))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body
