"""Fixtures for the command's tests: real servers on 127.0.0.1, each on its own event loop thread.

The command runs its own event loop (``asyncio.run`` inside ``main()``), so
the servers it calls cannot share the test's: each runs in a thread with a
loop of its own, as a separate service would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from microcall.cli import main


class LoopThread:
    """An event loop in a daemon thread; ``run(coro)`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# Requests seen per key, shared by every instance (a service and its replica
# meet the same "first call is slow" luck, as replicas of one store would).
SEEN: dict[str, int] = {}


def make_app() -> web.Application:
    """The test service: echoes what it got, fails on request, is slow on request."""
    seen = SEEN

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "query": [[k, v] for k, v in request.query.items()],
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": await request.json()
                if request.content_type == "application/json"
                else None,
                "text": body.decode(),
            }
        )

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"status": "set"}, status=int(request.match_info["code"]))

    async def flaky(request: web.Request) -> web.Response:
        # The first call for each key fails with 503, later ones answer.
        key = request.match_info["key"]
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"attempt": seen[key]})

    async def slow_first(request: web.Request) -> web.Response:
        # The first request for each key takes 300 ms, later ones answer at once.
        key = request.match_info["key"]
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            await asyncio.sleep(0.3)
        return web.Response(text="ok")

    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text="ok")

    async def tail(request: web.Request) -> web.Response:
        # One call in five is slow: a tail that hedging visibly cuts.
        seen["tail"] = seen.get("tail", 0) + 1
        await asyncio.sleep(0.1 if seen["tail"] % 5 == 0 else 0.0)
        return web.Response(text="ok")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 2_000_000)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get(r"/status/{code:\d+}", status)
    app.router.add_get("/flaky/{key}", flaky)
    app.router.add_get("/slow-first/{key}", slow_first)
    app.router.add_get("/sleep/{seconds}", sleep)
    app.router.add_get("/tail", tail)
    app.router.add_get("/big", big)
    return app


@pytest.fixture(scope="module")
def server_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


Start = Callable[[web.Application], str]


@pytest.fixture(scope="module")
def start_app(server_thread: LoopThread) -> Iterator[Start]:
    """``url = start_app(app)``: serve ``app`` on 127.0.0.1:0 until the module's tests end."""
    runners: list[web.AppRunner] = []

    def start(app: web.Application) -> str:
        async def go() -> str:
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            runners.append(runner)
            host, port = runner.addresses[0][:2]
            return f"http://{host}:{port}"

        url: str = server_thread.run(go())
        return url

    yield start
    for runner in runners:
        server_thread.run(runner.cleanup())


@pytest.fixture(scope="module")
def service(start_app: Start) -> str:
    """The base URL of the test service (:func:`make_app`)."""
    return start_app(make_app())


@pytest.fixture(scope="module")
def replica(start_app: Start) -> str:
    """A second instance of the test service."""
    return start_app(make_app())


class Ran:
    """What one run of the command did: its exit status and what it printed."""

    def __init__(self, status: int, out: str, err: str) -> None:
        self.status = status
        self.out = out
        self.err = err

    def json(self) -> Any:
        import json

        return json.loads(self.out)


Run = Callable[..., Ran]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``run("get", url, ...)``: run the command in this process and capture its output."""

    def call(*argv: str) -> Ran:
        try:
            status = main(list(argv))
        except SystemExit as exit_info:  # argparse's own exits (--version, bad options)
            status = exit_info.code if isinstance(exit_info.code, int) else 1
        captured = capsys.readouterr()
        return Ran(status, captured.out, captured.err)

    return call


def one_line_error(ran: Ran) -> bool:
    """The command failed with one line on stderr and no traceback."""
    lines = ran.err.strip().splitlines()
    return ran.status != 0 and len(lines) == 1 and "Traceback" not in ran.err


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
