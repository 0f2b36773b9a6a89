"""The aiohttp middleware on a real server (127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

import microcall
from microcall.server import ServerOptions, default_timeout, trust_networks
from microcall.server.aiohttp import AiohttpMiddleware
from tests.conftest import Serve
from tests.server._raw import raw_get

LOOPBACK = trust_networks("127.0.0.0/8")


async def report(request: web.Request) -> web.Response:
    deadline = microcall.current_deadline()
    priority = microcall.current_priority()
    return web.json_response(
        {
            "remaining": None if deadline is None else deadline.remaining(),
            "priority": None if priority is None else priority.value,
        }
    )


def app_with(protect: AiohttpMiddleware, **routes: web.RouteDef) -> web.Application:
    app = web.Application(middlewares=[protect])
    app.router.add_get("/report", report)
    app.add_routes(list(routes.values()))
    return app


async def test_handlers_see_the_callers_deadline_and_priority(serve: Serve) -> None:
    protect = AiohttpMiddleware(ServerOptions(trust=LOOPBACK))
    base = await serve(app_with(protect))
    async with microcall.AsyncClient(base) as client:
        low = (await client.get("/report", timeout=2.0, priority="low")).json()
        high = (await client.get("/report", timeout=1.0, priority="high")).json()
    assert 1.0 < low["remaining"] <= 2.0
    assert low["priority"] == "low"
    assert 0.0 < high["remaining"] <= 1.0
    assert high["priority"] == "high"
    assert protect.stats.admitted == 2
    assert microcall.current_deadline() is None  # nothing leaks into the test's context


async def test_without_headers_the_server_default_applies(serve: Serve) -> None:
    base = await serve(app_with(AiohttpMiddleware(ServerOptions(default_timeout=3.0))))
    status, _, body = await raw_get(base, "/report")
    assert status == 200
    assert b'"priority": "normal"' in body
    remaining = float(body.split(b'"remaining": ')[1].split(b",")[0])
    assert 2.0 < remaining <= 3.0


async def test_the_context_is_reset_between_requests_on_one_connection(serve: Serve) -> None:
    # aiohttp serves a keep-alive connection's requests in one task: a
    # deadline left behind would leak into the next request.
    base = await serve(app_with(AiohttpMiddleware(ServerOptions(default_timeout=9.0))))
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/report", headers={"X-Request-Timeout": "0.5"}) as first:
            assert (await first.json())["remaining"] <= 0.5
        async with session.get(base + "/report") as second:
            assert (await second.json())["remaining"] > 8.0


async def test_an_expired_request_is_answered_without_running_the_handler(serve: Serve) -> None:
    ran = 0

    async def work(request: web.Request) -> web.Response:
        nonlocal ran
        ran += 1
        return web.Response(text="done")

    protect = AiohttpMiddleware()
    base = await serve(app_with(protect, work=web.get("/work", work)))
    status, headers, _ = await raw_get(base, "/work", [(b"X-Request-Timeout", b"0.001")])
    assert status == 408
    assert headers["x-do-not-retry"] == "1"
    assert ran == 0
    assert protect.stats.expired == 1


async def test_microcall_does_not_retry_an_expired_refusal(serve: Serve) -> None:
    # A server floor of 1 s makes a 0.5 s call arrive "expired".
    protect = AiohttpMiddleware(ServerOptions(floor=1.0))
    base = await serve(app_with(protect))
    async with microcall.AsyncClient(base, strategy=microcall.retry(3)) as client:
        response = await client.get("/report", timeout=0.5)
    assert response.status_code == 408
    assert len(response.attempts) == 1
    assert protect.stats.expired == 1


async def test_garbage_headers_are_ignored_and_counted(serve: Serve) -> None:
    protect = AiohttpMiddleware(ServerOptions(default_timeout=4.0))
    base = await serve(app_with(protect))
    garbage = [
        [(b"X-Request-Timeout", b"\xff\xfe1"), (b"X-Request-Priority", b"h\xc3\xafgh")],
        [(b"X-Request-Timeout", b"nan"), (b"X-Request-Priority", b"urgent")],
        [(b"X-Request-Timeout", b"-3"), (b"X-Request-Timeout", b"1")],
        [(b"X-Request-Timeout", b"9" * 400)],
        [(b"X-Request-Priority", b"low"), (b"X-Request-Priority", b"high")],
    ]
    for headers in garbage:
        status, _, body = await raw_get(base, "/report", headers)
        assert status == 200, body
        assert b'"priority": "normal"' in body
    assert protect.stats.malformed_timeout == 4
    assert protect.stats.malformed_priority == 3
    assert protect.stats.admitted == 5


async def test_strict_mode_answers_400(serve: Serve) -> None:
    protect = AiohttpMiddleware(ServerOptions(strict=True))
    base = await serve(app_with(protect))
    status, headers, _ = await raw_get(base, "/report", [(b"X-Request-Timeout", b"inf")])
    assert status == 400
    assert headers["x-do-not-retry"] == "1"
    assert protect.stats.rejected_malformed == 1


async def test_route_default_timeouts_on_functions_and_views(serve: Serve) -> None:
    @default_timeout(30)
    async def slow_report(request: web.Request) -> web.Response:
        return await report(request)

    class Reports(web.View):
        @default_timeout(45)
        async def get(self) -> web.Response:
            return await report(self.request)

    app = app_with(AiohttpMiddleware(ServerOptions(default_timeout=2.0)))
    app.router.add_get("/slow", slow_report)
    app.router.add_view("/view", Reports)
    base = await serve(app)
    for path, expected in (("/slow", 30.0), ("/view", 45.0), ("/report", 2.0)):
        _, _, body = await raw_get(base, path)
        remaining = float(body.split(b'"remaining": ')[1].split(b",")[0])
        assert expected - 1.0 < remaining <= expected, path
    _, _, body = await raw_get(base, "/slow", [(b"X-Request-Timeout", b"1.0")])
    assert float(body.split(b'"remaining": ')[1].split(b",")[0]) <= 1.0


async def test_cancel_on_deadline_stops_the_handler(serve: Serve) -> None:
    cancelled = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="too late")

    protect = AiohttpMiddleware(ServerOptions(cancel_on_deadline=True))
    base = await serve(app_with(protect, stuck=web.get("/stuck", stuck)))
    loop = asyncio.get_running_loop()
    began = loop.time()
    status, headers, _ = await raw_get(base, "/stuck", [(b"X-Request-Timeout", b"0.3")])
    assert status == 408
    assert headers["x-do-not-retry"] == "1"
    assert cancelled.is_set()
    assert loop.time() - began < 10
    assert protect.stats.cancelled == 1


async def _read_until_closed(base: str, path: str, timeout: bytes) -> bytes:
    """What a raw client reads from ``path`` until the server closes (or 5 s pass)."""
    host, _, port = base.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Request-Timeout: ")
    writer.write(timeout + b"\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(-1), 5.0)
    finally:
        writer.close()


@pytest.mark.parametrize("cancel", [True, False], ids=["cancelled", "ran-out"])
async def test_a_stream_cut_at_its_deadline_ends_its_connection_not_with_a_408_inside(
    serve: Serve, cancel: bool
) -> None:
    """Half a response cannot become a 408: the connection is closed, the body left unended.

    aiohttp wrote the 408 into the started chunked body, ended it cleanly and
    kept the connection: the client read a whole answer, and waited on.
    """
    downstream = web.Application()
    downstream.router.add_get("/slow", _slow)
    stalled = microcall.AsyncClient(await serve(downstream))

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first-row\n")
        if cancel:
            await asyncio.sleep(30)
        else:
            await stalled.get("/slow")  # runs out of the request's deadline
        return response

    protect = AiohttpMiddleware(ServerOptions(cancel_on_deadline=cancel))
    base = await serve(app_with(protect, streamed=web.get("/streamed", streamed)))
    try:
        answer = await _read_until_closed(base, "/streamed", b"0.3")
    finally:
        await stalled.aclose()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"first-row" in answer
    assert b"408" not in answer
    assert not answer.endswith(b"0\r\n\r\n")  # the chunked body was never ended


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="slow")


async def test_without_cancel_on_deadline_a_late_handler_finishes_and_is_counted(
    serve: Serve,
) -> None:
    async def late(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="late")

    protect = AiohttpMiddleware()
    base = await serve(app_with(protect, late=web.get("/late", late)))
    status, _, body = await raw_get(base, "/late", [(b"X-Request-Timeout", b"0.05")])
    assert (status, body) == (200, b"late")
    assert protect.stats.overran == 1


async def test_http_exceptions_and_errors_pass_through(serve: Serve) -> None:
    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    protect = AiohttpMiddleware(
        ServerOptions(
            shedding=microcall.server.Shedding(limit=microcall.server.StaticLimit(limit=4))
        )
    )
    base = await serve(
        app_with(protect, missing=web.get("/missing", missing), broken=web.get("/broken", broken))
    )
    assert (await raw_get(base, "/missing"))[0] == 404
    assert (await raw_get(base, "/broken"))[0] == 500
    assert (await raw_get(base, "/nowhere"))[0] == 404
    assert protect.limiter is not None
    assert protect.limiter.inflight == 0


@pytest.mark.parametrize("value", [b"0", b"0.0049"])
async def test_below_the_floor_is_expired(serve: Serve, value: bytes) -> None:
    base = await serve(app_with(AiohttpMiddleware()))
    assert (await raw_get(base, "/report", [(b"X-Request-Timeout", value)]))[0] == 408
