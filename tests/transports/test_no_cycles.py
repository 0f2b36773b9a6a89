"""A call leaves nothing in a reference cycle: the cyclic collector's passes would cost more than the call.

Everything a call makes is freed by reference counting as the call ends.
An object of microcall's (or the HTTP parser it drives) found unreachable by
the collector after a run of calls means a cycle crept back in; the
collector's passes over such garbage once cost a fifth of a call's CPU.
The server in the test (aiohttp) may leave cycles of its own: only
microcall's objects and httptools' parsers count.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from aiohttp import web

import microcall
from microcall.transports import Transport
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from tests.conftest import Serve

CALLS = 200


def ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Extra": "1"})

    app = web.Application()
    app.router.add_get("/ok", ok)
    return app


@pytest.fixture
def garbage() -> Iterator[list[object]]:
    """Objects the cyclic collector finds unreachable while the test runs (kept, not freed)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def ours(found: list[object]) -> list[str]:
    names = []
    for thing in found:
        kind = type(thing)
        if kind.__module__.startswith(("microcall", "httptools")):
            names.append(f"{kind.__module__}.{kind.__qualname__}")
    return sorted(set(names))


@pytest.mark.parametrize("make", [H1Transport, AiohttpTransport], ids=["h1", "aiohttp"])
async def test_asyncio_calls_leave_no_cycle(
    serve: Serve, garbage: list[object], make: type[Transport]
) -> None:
    url = await serve(ok_app())
    async with microcall.AsyncClient(url, transport=make()) as client:

        async def calls() -> None:
            for _ in range(CALLS // 4):
                response = await client.get("/ok")
                assert response.status_code == 200

        await asyncio.gather(*(calls() for _ in range(4)))
        gc.collect()
        assert ours(garbage) == []


async def test_blocking_calls_leave_no_cycle(serve: Serve, garbage: list[object]) -> None:
    url = await serve(ok_app())

    def calls() -> None:
        with microcall.Client(url) as client:
            for _ in range(CALLS):
                assert client.get("/ok").status_code == 200
            gc.collect()

    await asyncio.to_thread(calls)
    assert ours(garbage) == []
