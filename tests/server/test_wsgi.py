"""The WSGI middleware: Flask under werkzeug's threaded server (127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Any

import pytest
from flask import Flask, Response, jsonify

import microcall
from microcall.errors import ConfigurationError
from microcall.server import ServerOptions, Shedding, StaticLimit, default_timeout
from microcall.server.wsgi import WSGIMiddleware
from tests.server._raw import raw_get
from tests.server._waiting import eventually
from tests.server.conftest import ServeWSGI


def seen() -> dict[str, Any]:
    deadline = microcall.current_deadline()
    priority = microcall.current_priority()
    return {
        "remaining": None if deadline is None else deadline.remaining(),
        "priority": None if priority is None else priority.value,
        "thread": threading.current_thread().name,
    }


def flask_app(options: ServerOptions | None = None) -> tuple[Flask, WSGIMiddleware]:
    app = Flask(__name__)

    @app.get("/report")
    def report() -> Response:
        return jsonify(seen())

    @app.get("/long")
    @default_timeout(40)
    def long() -> Response:
        return jsonify(seen())

    protect = WSGIMiddleware(app.wsgi_app, options)
    app.wsgi_app = protect  # type: ignore[method-assign]
    return app, protect


async def test_views_see_the_callers_deadline_and_priority(serve_wsgi: ServeWSGI) -> None:
    app, protect = flask_app()
    base = serve_wsgi(app)
    async with microcall.AsyncClient(base) as client:
        first = (await client.get("/report", timeout=2.0, priority="low")).json()
        second = (await client.get("/report", timeout=1.0)).json()
    assert 1.0 < first["remaining"] <= 2.0
    assert first["priority"] == "low"
    assert 0.0 < second["remaining"] <= 1.0
    assert second["priority"] == "normal"
    assert protect.stats.admitted == 2


async def test_expired_requests_are_refused(serve_wsgi: ServeWSGI) -> None:
    app, protect = flask_app()
    base = serve_wsgi(app)
    status, headers, _ = await raw_get(base, "/report", [(b"X-Request-Timeout", b"0.000")])
    assert status == 408
    assert headers["x-do-not-retry"] == "1"
    assert protect.stats.expired == 1
    assert protect.stats.admitted == 0


async def test_repeated_and_garbage_headers_are_ignored(serve_wsgi: ServeWSGI) -> None:
    app, protect = flask_app(ServerOptions(default_timeout=4.0))
    base = serve_wsgi(app)
    for headers in (
        [(b"X-Request-Timeout", b"1"), (b"X-Request-Timeout", b"2")],  # joined: "1,2"
        [(b"X-Request-Timeout", b"\xc2\xbd"), (b"X-Request-Priority", b"\xe9lev\xe9e")],
        [(b"X-Request-Timeout", b"0x1p3")],
    ):
        status, _, body = await raw_get(base, "/report", headers)
        assert status == 200, body
    assert protect.stats.malformed_timeout == 3
    assert protect.stats.malformed_priority == 1


async def test_route_default_timeout_on_a_flask_view(serve_wsgi: ServeWSGI) -> None:
    app, _ = flask_app(ServerOptions(default_timeout=2.0))
    base = serve_wsgi(app)
    _, _, body = await raw_get(base, "/long")
    remaining = float(body.split(b'"remaining":')[1].split(b",")[0])
    assert 39.0 < remaining <= 40.0


async def test_the_permit_is_held_until_the_server_closes_the_response(
    serve_wsgi: ServeWSGI,
) -> None:
    app, protect = flask_app(ServerOptions(shedding=Shedding(limit=StaticLimit(limit=3))))
    base = serve_wsgi(app)
    async with microcall.AsyncClient(base) as client:
        for _ in range(10):
            assert (await client.get("/report")).status_code == 200
    limiter = protect.limiter
    assert limiter is not None
    await eventually(lambda: limiter.inflight == 0)
    assert protect.stats.shed == 0


def test_cancel_on_deadline_is_refused_for_wsgi() -> None:
    with pytest.raises(ConfigurationError, match="cannot be cancelled"):
        WSGIMiddleware(Flask(__name__).wsgi_app, ServerOptions(cancel_on_deadline=True))


def _impatient(base: str) -> None:
    """A client that resets the connection as soon as the answer starts arriving."""
    host, _, port = base.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_clients_that_reset_the_connection_leave_no_permit_taken(
    serve_wsgi: ServeWSGI,
) -> None:
    """werkzeug drains the request before close(), and a reset makes that raise: no close() comes.

    The slot was taken for good: after a few such clients an idle server shed every request.
    """
    app = Flask(__name__)

    @app.get("/w")
    def w() -> str:
        return "ok"

    protect = WSGIMiddleware(
        app.wsgi_app, ServerOptions(shedding=Shedding(limit=StaticLimit(limit=4)))
    )
    app.wsgi_app = protect  # type: ignore[method-assign]
    base = serve_wsgi(app)
    for _ in range(12):
        await asyncio.to_thread(_impatient, base)
    limiter = protect.limiter
    assert limiter is not None
    await eventually(lambda: limiter.inflight == 0)
    status, _, _ = await raw_get(base, "/w")
    assert status == 200
