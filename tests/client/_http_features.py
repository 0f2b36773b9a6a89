"""What the cookie, auth and hook tests share: the three transports, and a server that echoes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web

from microcall.transports import Transport
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport

TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "h1": H1Transport,
    "aiohttp": AiohttpTransport,
    "httpx": lambda: HttpxTransport(http2=False),
}


@pytest.fixture(params=sorted(TRANSPORTS))
def make_transport(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    """A factory of the transport under test: each client gets one of its own."""
    return TRANSPORTS[request.param]


async def echo(request: web.Request) -> web.Response:
    """Answer with what arrived: the Cookie headers, the parsed cookies and the other headers."""
    return web.json_response(
        {
            "path": request.path,
            "cookie_headers": request.headers.getall("Cookie", []),
            "cookies": dict(request.cookies),
            "authorization": request.headers.get("Authorization"),
            "headers": {name: value for name, value in request.headers.items()},
        }
    )
