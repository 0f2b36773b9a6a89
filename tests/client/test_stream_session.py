"""A streamed call gets what every call gets: the jar's cookies, auth= (a refresh after a 401), hooks.

The 401 that the refresh answers is a streamed response too: its connection
is let go before the call is sent again, so a pool of one connection still
carries the resend.
"""

from __future__ import annotations

import pytest
from aiohttp import web

import microcall
from microcall import OutgoingRequest, Response
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from tests.conftest import Serve


class Token(microcall.Auth):
    def __init__(self) -> None:
        self.token = "stale"

    def apply(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"

    def refresh(self, response: Response) -> None:
        self.token = "fresh"


async def _export(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != "Bearer fresh":
        # A body the client never reads: the connection cannot be reused for the resend.
        refused = web.StreamResponse(status=401)
        await refused.prepare(request)
        await refused.write(b"no" * 1000)
        return refused
    if request.cookies.get("session") != "s1":
        return web.Response(status=403)
    answer = web.StreamResponse()
    answer.set_cookie("seen", "yes")
    await answer.prepare(request)
    for index in range(3):
        await answer.write(f"line {index}\n".encode())
    await answer.write_eof()
    return answer


@pytest.mark.parametrize("transport", ["h1", "aiohttp"])
async def test_a_streamed_call_refreshes_on_401_and_carries_the_jar(
    serve: Serve, transport: str
) -> None:
    app = web.Application()
    app.router.add_get("/export", _export)
    base = await serve(app)
    limits = microcall.Limits(max_connections=1)
    chosen = H1Transport(limits=limits) if transport == "h1" else AiohttpTransport(limits=limits)
    seen: list[int] = []
    async with microcall.AsyncClient(
        base,
        transport=chosen,
        auth=Token(),
        cookies={"session": "s1"},
        hooks={"response": [lambda response: seen.append(response.status_code)]},
        timeout=10,
    ) as client:
        async with client.stream("GET", "/export") as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines()]
        assert lines == ["line 0", "line 1", "line 2"]
        assert seen == [200]
        assert len(response.attempts) == 2  # the 401, then the resend
        assert response.cookies == {"seen": "yes"}
        jar = client.cookies
        assert jar is not None
        assert {cookie.name for cookie in jar} == {"session", "seen"}


async def test_awaiting_a_stream_instead_of_entering_it_says_how_it_is_used(serve: Serve) -> None:
    app = web.Application()
    app.router.add_get("/export", _export)
    async with microcall.AsyncClient(await serve(app)) as client:
        with pytest.raises(microcall.UsageError, match=r"async with client\.stream"):
            await client.stream("GET", "/export")  # type: ignore[misc]
