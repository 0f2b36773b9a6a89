"""Hypothesis against the middleware's header parsers: directly, and through real servers.

The parsers are pure functions of header values from the network: they must
never raise, and must answer None, MALFORMED, or a value in range. Then the
same idea end to end: random header bytes written on a raw socket to a real
aiohttp, ASGI (uvicorn) and WSGI (werkzeug) server on 127.0.0.1, each behind
microcall's middleware, lenient and strict. A request may be refused (400) or
refused as expired (408), never answered 5xx, and no server logs a traceback
or an error. Examples are bounded and derandomized, so every run is the same.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

import microcall
from microcall._wire import MAX_HEADER_TIMEOUT
from microcall.priority import Priority
from microcall.server import (
    MALFORMED,
    ServerOptions,
    Shedding,
    StaticLimit,
    parse_priority,
    parse_timeout,
    trust_all,
)
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.server.asgi import ASGIMiddleware
from microcall.server.wsgi import WSGIMiddleware

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None, print_blob=True)
WIRE_FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text shaped like the values that reach the parsers: near-misses of the
# grammar as well as anything at all.
near_numbers = st.from_regex(r"\A[ \t]*[-+]?[0-9.eE_xX+\-]{0,12}[ \t]*\Z", fullmatch=True)
header_values = st.one_of(st.text(max_size=48), near_numbers, st.sampled_from(list(Priority)))
value_lists = st.lists(header_values.map(str), max_size=3)


# ------------------------------------------------------------ the parsers themselves


@FUZZ
@given(value_lists)
def test_parse_timeout_never_raises_and_stays_in_range(values: list[str]) -> None:
    seconds = parse_timeout(values)
    if not values:
        assert seconds is None
    elif seconds is not MALFORMED:
        assert isinstance(seconds, float)
        assert math.isfinite(seconds)
        assert 0.0 <= seconds <= MAX_HEADER_TIMEOUT


@FUZZ
@given(value_lists)
def test_parse_priority_never_raises_and_names_a_priority(values: list[str]) -> None:
    priority = parse_priority(values)
    if not values:
        assert priority is None
    else:
        assert priority is MALFORMED or isinstance(priority, Priority)


@FUZZ
@given(st.binary(max_size=48))
def test_bytes_as_servers_decode_them_never_raise(raw: bytes) -> None:
    # aiohttp and ASGI servers hand over latin-1 (or UTF-8 with surrogates).
    for text in (raw.decode("latin-1"), raw.decode("utf-8", "surrogateescape")):
        parse_timeout([text])
        parse_priority([text])


# ------------------------------------------------------------ through real servers

HEADER_NAMES = [
    b"X-Request-Timeout",
    b"x-request-timeout",
    b"X-Request-Priority",
    b"x-request-priority",
    b"X-Do-Not-Retry",
]
# Field-value bytes: anything but CR and LF, which would end the line (and
# make it another request, not another value).
value_bytes = st.binary(max_size=40).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
header_lines = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), value_bytes), max_size=4)

LENIENT = ServerOptions(trust=trust_all)
STRICT = ServerOptions(trust=trust_all, strict=True, shedding=Shedding(limit=StaticLimit(limit=64)))


class _Problems(logging.Handler):
    """Every log record at ERROR or above, or carrying a traceback.

    Except aiohttp's own refusal of bytes HTTP does not allow in a field value
    (a control character, say): its parser answers 400 before any application
    code, microcall's middleware included, sees the request, and it logs that
    with the parser's exception attached. That is aiohttp's choice of logging,
    not a failure of the middleware under test.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            error = record.exc_info[1] if record.exc_info else None
            if isinstance(error, BadHttpMessage):
                return
            self.records.append(f"{record.name}: {record.getMessage()} {error!r}")


async def _aiohttp_answer(request: web.Request) -> web.Response:
    return web.Response(text=repr((microcall.current_deadline(), microcall.current_priority())))


async def _asgi_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = repr((microcall.current_deadline(), microcall.current_priority())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _wsgi_answer(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr((microcall.current_deadline(), microcall.current_priority())).encode()]


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


async def _start_async_servers(urls: dict[str, str], stops: list[Any]) -> None:
    for name, options in (("lenient", LENIENT), ("strict", STRICT)):
        app = web.Application(middlewares=[AiohttpMiddleware(options)])
        app.router.add_get("/", _aiohttp_answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        stops.append(runner.cleanup)
        urls[f"aiohttp-{name}"] = f"127.0.0.1:{runner.addresses[0][1]}"

        config = uvicorn.Config(
            ASGIMiddleware(_asgi_answer, options),
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_config=None,  # records go to the root logger, where the test sees them
            access_log=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        urls[f"asgi-{name}"] = f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

        async def stop(server: uvicorn.Server = server, task: asyncio.Task[None] = task) -> None:
            server.should_exit = True
            await task

        stops.append(stop)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[dict[str, str], _Problems]]:
    """Six servers (three kinds, lenient and strict) in background threads; their addresses."""
    problems = _Problems()
    logging.getLogger().addHandler(problems)
    urls: dict[str, str] = {}
    stops: list[Any] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-servers", daemon=True)
    thread.start()
    wsgi_servers: list[tuple[BaseWSGIServer, threading.Thread]] = []
    try:
        asyncio.run_coroutine_threadsafe(_start_async_servers(urls, stops), loop).result(30)
        for name, options in (("lenient", LENIENT), ("strict", STRICT)):
            wsgi = make_server(
                "127.0.0.1",
                0,
                WSGIMiddleware(_wsgi_answer, options),
                threaded=True,
                request_handler=_Quiet,
            )
            serving = threading.Thread(target=wsgi.serve_forever, args=(0.05,), daemon=True)
            serving.start()
            wsgi_servers.append((wsgi, serving))
            urls[f"wsgi-{name}"] = f"127.0.0.1:{wsgi.server_port}"
        yield urls, problems
    finally:
        for wsgi, serving in wsgi_servers:
            wsgi.shutdown()
            wsgi.server_close()
            serving.join(10)
        for stop in reversed(stops):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        logging.getLogger().removeHandler(problems)


def raw_status(address: str, lines: list[tuple[bytes, bytes]]) -> int:
    """Send one GET with exactly these header lines; the answer's status code."""
    host, _, port = address.partition(":")
    request = [b"GET / HTTP/1.1", b"Host: " + address.encode()]
    request += [name + b": " + value for name, value in lines]
    request += [b"Connection: close", b"", b""]
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"\r\n".join(request))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), f"no HTTP answer: {answer[:80]!r}"
    return int(status_line.split()[1])


SERVER_NAMES = [
    f"{kind}-{mode}" for kind in ("aiohttp", "asgi", "wsgi") for mode in ("lenient", "strict")
]


@pytest.mark.parametrize("server", SERVER_NAMES)
def test_random_header_bytes_never_make_a_server_fail(
    servers: tuple[dict[str, str], _Problems], server: str
) -> None:
    urls, problems = servers
    problems.records.clear()
    seen: set[int] = set()

    @WIRE_FUZZ
    @given(header_lines)
    def send(lines: list[tuple[bytes, bytes]]) -> None:
        status = raw_status(urls[server], lines)
        seen.add(status)
        assert status < 500, (status, lines)
        assert status in (200, 400, 408), (status, lines)

    send()
    assert 200 in seen
    if server.endswith("strict"):
        assert 400 in seen
    assert problems.records == []
