"""Fixtures for the server tests: uvicorn (ASGI) and werkzeug (WSGI) servers on 127.0.0.1:0.

The aiohttp servers come from the shared ``serve`` fixture in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

ServeASGI = Callable[[Any], Awaitable[str]]
ServeWSGI = Callable[[Any], str]


@pytest.fixture
async def serve_asgi() -> AsyncIterator[ServeASGI]:
    """``base_url = await serve_asgi(asgi_app)``: uvicorn in this event loop, on 127.0.0.1:0."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: Any) -> str:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        running.append((server, task))
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # startup failed: raise its error here
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@pytest.fixture
def serve_wsgi() -> Iterator[ServeWSGI]:
    """``base_url = serve_wsgi(wsgi_app)``: werkzeug's threaded server in a thread, on 127.0.0.1:0."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    running: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        # A short poll interval makes shutdown() at teardown quick.
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="wsgi-test-server", daemon=True
        )
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
