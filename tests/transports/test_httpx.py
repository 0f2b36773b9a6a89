"""The httpx transport through AsyncClient, against real servers on 127.0.0.1.

HTTP/1.1 calls go to the aiohttp ``serve`` fixture and the raw-socket fault
server; HTTP/2 calls go to hypercorn over TLS, with certificates from a
throwaway trustme CA that only the test's own SSLContext trusts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from yarl import URL

import microcall
from microcall import AttemptKind, CallError
from microcall._request import Request
from microcall.errors import ConfigurationError, UsageError
from microcall.transports.httpx import HttpxTransport, map_error
from tests.conftest import Serve
from tests.faultserver import EXPECTED_ERROR, Fault, FaultServer
from tests.faultserver import faults_fixture as faults_fixture  # provides the `faults` fixture
from tests.server._waiting import eventually

QUICK_BACKOFF = microcall.Backoff(base=0.001, cap=0.002)
FAULT_TIMEOUT = 0.3
# How long past its deadline a call may still be running on a busy machine.
MARGIN = 0.25


def httpx_client(base: str, **options: Any) -> microcall.AsyncClient:
    return microcall.AsyncClient(base, transport=HttpxTransport(), **options)


# ------------------------------------------------------------ HTTP/1.1, aiohttp server


def peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else -1


async def test_get_and_post_carry_query_headers_body_and_the_deadline(serve: Serve) -> None:
    async def echo(request: web.Request) -> web.Response:
        reply = web.json_response(
            {
                "method": request.method,
                "query": dict(request.query),
                "body": await request.text(),
                "content_type": request.content_type,
                "custom": request.headers.get("X-Custom"),
                "timeout": request.headers.get("X-Request-Timeout"),
                "port": peer_port(request),
            }
        )
        reply.headers.add("X-Multi", "one")
        reply.headers.add("X-Multi", "two")
        return reply

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    base = await serve(app)
    async with httpx_client(base, headers={"X-Custom": "yes"}, timeout=5.0) as client:
        got = await client.get("/echo", params={"q": "books"})
        posted = await client.post("/echo", json={"book": 7})
        again = await client.get("/echo")

    seen = got.json()
    assert got.status_code == 200
    assert (seen["method"], seen["query"], seen["custom"]) == ("GET", {"q": "books"}, "yes")
    # The per-attempt deadline header arrives, a little under the 5 s budget.
    assert 0 < float(seen["timeout"]) <= 5.0
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers.getall("x-multi") == ["one", "two"]  # type: ignore[attr-defined]
    assert got.url == URL(base + "/echo?q=books")
    assert got.reason == "OK"
    [attempt] = got.attempts
    assert attempt.status == 200

    sent = posted.json()
    assert sent["method"] == "POST"
    assert json.loads(sent["body"]) == {"book": 7}
    assert sent["content_type"] == "application/json"
    # Sequential calls reuse one keep-alive connection.
    assert seen["port"] == sent["port"] == again.json()["port"]


async def test_status_codes_are_answers(serve: Serve) -> None:
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    base = await serve(app)
    async with httpx_client(base, timeout=5.0) as client:
        responses = [await client.get(f"/status/{code}") for code in (201, 204, 404, 500)]
    assert [response.status_code for response in responses] == [201, 204, 404, 500]
    assert responses[2].reason == "Not Found"
    assert responses[1].content == b""
    with pytest.raises(microcall.HTTPStatusError):
        responses[3].raise_for_status()


async def test_a_retry_strategy_retries_a_503(serve: Serve) -> None:
    hits = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=503 if hits == 1 else 200, text=str(hits))

    app = web.Application()
    app.router.add_get("/", flaky)
    base = await serve(app)
    strategy = microcall.retry(3, backoff=QUICK_BACKOFF)
    async with httpx_client(base, timeout=5.0, strategy=strategy) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.text == "2"
    assert [attempt.status for attempt in response.attempts] == [503, 200]
    assert [attempt.kind for attempt in response.attempts] == [
        AttemptKind.FIRST,
        AttemptKind.RETRY,
    ]


def slow_app(cancelled: list[str], started: list[str] | None = None) -> web.Application:
    """``/slow?call=name``: the first request of each name hangs until its client leaves."""
    hits: dict[str, int] = {}

    async def slow(request: web.Request) -> web.Response:
        call = request.query.get("call", "")
        hits[call] = hits.get(call, 0) + 1
        if hits[call] == 1 or call == "always":
            if started is not None:
                started.append(call)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(call)
                raise
        return web.Response(text=f"{call} {hits[call]}")

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app


async def test_attempt_timeouts_and_the_deadline_against_a_slow_handler(serve: Serve) -> None:
    cancelled: list[str] = []
    started: list[str] = []
    base = await serve(slow_app(cancelled, started))
    strategy = microcall.retry(2, attempt_timeout=0.15, backoff=QUICK_BACKOFF)
    async with httpx_client(base, timeout=3.0) as client:
        with pytest.raises(microcall.AttemptTimeout) as timed_out:
            await client.get("/slow", params={"call": "always"}, strategy=strategy)
        began = time.monotonic()
        with pytest.raises(microcall.DeadlineExceeded) as exceeded:
            await client.get("/slow", params={"call": "always"}, timeout=0.2)
        elapsed = time.monotonic() - began

    attempts = timed_out.value.attempts
    assert [attempt.error for attempt in attempts] == ["AttemptTimeout", "AttemptTimeout"]
    assert all(0.15 - 0.02 <= attempt.duration <= 0.15 + MARGIN for attempt in attempts)
    assert len(exceeded.value.attempts) == 1
    assert 0.2 - 0.02 <= elapsed <= 0.2 + MARGIN
    # Each timed-out attempt closed its connection, so the server stopped the
    # work it had started (on a loaded machine an attempt can be cut before
    # its request reaches a handler at all).
    await eventually(lambda: len(cancelled) == len(started))
    assert started


async def test_a_cancelled_call_stays_cancelled_and_lets_go(serve: Serve) -> None:
    cancelled: list[str] = []
    started: list[str] = []
    base = await serve(slow_app(cancelled, started))
    async with httpx_client(base, timeout=5.0) as client:
        task = asyncio.create_task(client.get("/slow", params={"call": "mine"}))
        await eventually(lambda: started == ["mine"])
        task.cancel()
        # A cancellation from the caller is not turned into a timeout.
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: cancelled == ["mine"])


async def test_hedging_cancels_the_loser_and_its_server_work(serve: Serve) -> None:
    cancelled: list[str] = []
    base = await serve(slow_app(cancelled))
    async with httpx_client(base, timeout=5.0, strategy=microcall.hedged(0.05)) as client:
        response = await client.get("/slow", params={"call": "hedged"})
        assert response.text == "hedged 2"
        first, hedge = response.attempts
        assert (first.kind, hedge.kind) == (AttemptKind.FIRST, AttemptKind.HEDGE)
        assert first.cancelled
        assert hedge.status == 200
        # The loser's connection was closed, so the server's handler was stopped.
        await eventually(lambda: cancelled == ["hedged"])


async def test_redirects_are_followed_unless_turned_off(serve: Serve) -> None:
    async def old(request: web.Request) -> web.Response:
        raise web.HTTPFound("/new")

    async def new(request: web.Request) -> web.Response:
        return web.Response(text="moved here")

    app = web.Application()
    app.router.add_get("/old", old)
    app.router.add_get("/new", new)
    base = await serve(app)
    async with httpx_client(base, timeout=5.0) as client:
        followed = await client.get("/old")
    transport = HttpxTransport(follow_redirects=False)
    async with microcall.AsyncClient(base, transport=transport, timeout=5.0) as client:
        kept = await client.get("/old")
    assert (followed.status_code, followed.text) == (200, "moved here")
    assert followed.url == URL(base + "/new")
    assert kept.status_code == 302
    assert kept.headers["Location"] == "/new"


async def test_cookies_are_not_kept_between_calls(serve: Serve) -> None:
    async def cookies(request: web.Request) -> web.Response:
        reply = web.Response(text=request.headers.get("Cookie", "none"))
        reply.set_cookie("session", "abc")
        return reply

    app = web.Application()
    app.router.add_get("/", cookies)
    base = await serve(app)
    async with httpx_client(base, timeout=5.0) as client:
        texts = [(await client.get("/")).text for _ in range(2)]
    assert texts == ["none", "none"]


# ------------------------------------------------------------ faults and errors


@pytest.mark.parametrize("fault", list(Fault), ids=str)
async def test_each_fault_ends_in_its_typed_error(faults: FaultServer, fault: Fault) -> None:
    url = faults.url(fault) + "/books"
    async with httpx_client(faults.url(fault), timeout=FAULT_TIMEOUT) as client:
        began = time.monotonic()
        with pytest.raises(CallError) as caught:
            await client.get(url)
        elapsed = time.monotonic() - began
        # Whatever happened, no connection is left open behind the call.
        await eventually(lambda: faults.open_connections == 0)

    error = caught.value
    assert type(error) is EXPECTED_ERROR[fault]
    assert elapsed <= FAULT_TIMEOUT + MARGIN
    [attempt] = error.attempts
    assert attempt.endpoint == faults.url(fault).removeprefix("http://")
    assert attempt.endpoint in str(error)
    # One attempt is one request on the wire: httpx resends nothing by itself.
    assert faults.accepted[fault] == (0 if fault is Fault.REFUSE else 1)


async def test_errors_never_show_credentials(faults: FaultServer) -> None:
    port = URL(faults.url(Fault.REFUSE)).port
    async with httpx_client(f"http://user:s3cret@127.0.0.1:{port}", timeout=2.0) as client:
        with pytest.raises(microcall.ConnectError) as caught:
            await client.get("/", headers={"Authorization": "Bearer t0ken"})
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "t0ken" not in message


async def test_a_call_waiting_for_a_pooled_connection_ends_at_its_deadline(
    faults: FaultServer,
) -> None:
    transport = HttpxTransport(limits=microcall.Limits(max_connections=1))
    async with microcall.AsyncClient(faults.url(Fault.HANG), transport=transport) as client:
        holder = asyncio.create_task(client.get("/", timeout=2 * FAULT_TIMEOUT))
        await eventually(lambda: faults.accepted[Fault.HANG] == 1)
        with pytest.raises(microcall.DeadlineExceeded):
            await client.get("/", timeout=FAULT_TIMEOUT)
        with pytest.raises(microcall.DeadlineExceeded):
            await holder
    # The pool's one connection was busy: the waiter never opened another.
    assert faults.accepted[Fault.HANG] == 1


async def test_a_url_httpx_cannot_send_is_a_usage_error() -> None:
    async with httpx_client("http://127.0.0.1:9", timeout=2.0) as client:
        with pytest.raises(UsageError):
            await client.get("ftp://127.0.0.1:9/file")


async def test_a_closed_transport_refuses_to_send() -> None:
    transport = HttpxTransport()
    await transport.aclose()
    request = Request("GET", URL("http://127.0.0.1:9/"), {})
    with pytest.raises(UsageError):
        await transport.send(request, request.url, {}, 1.0)


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "options",
    [
        {"limits": 10},
        {"limits": microcall.Limits(max_connections_per_host=2)},
        {"verify": "yes"},
        {"verify": None},
        {"follow_redirects": 1},
        {"http2": "on"},
    ],
    ids=["limits-int", "per-host-limit", "verify-str", "verify-none", "redirects-int", "http2-str"],
)
def test_bad_settings_are_refused_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        HttpxTransport(**options)


def test_http2_without_h2_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h2", None)  # makes ``import h2`` fail
    with pytest.raises(ConfigurationError, match=r'pip install "microcall\[httpx\]"'):
        HttpxTransport()
    HttpxTransport(http2=False)  # HTTP/1.1 alone needs no h2


def test_importing_microcall_does_not_import_httpx() -> None:
    check = "import sys, microcall; sys.exit('httpx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], timeout=30).returncode == 0


# ------------------------------------------------------------ HTTP/2 over TLS, hypercorn

Message = dict[str, Any]


class EchoApp:
    """An ASGI app answering with what it saw: HTTP version, client port, Host.

    ``/hold``: the first request waits until ``release`` is set; later ones answer at once.
    """

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = 0

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["path"] == "/hold":
            self.held += 1
            if self.held == 1:
                await self.release.wait()
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        body = {
            "http_version": scope["http_version"],
            "client_port": scope["client"][1],
            "host": headers.get("host"),
            "hold": self.held,
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


TLSServe = Callable[..., Awaitable[str]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA (and nothing else)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_serve(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[TLSServe]:
    """``base = await tls_serve(app, names=...)``: hypercorn over TLS on 127.0.0.1:0.

    The socket is bound and listening before hypercorn starts (it is handed
    over as ``fd://``), so the port is known and connections queue until
    hypercorn accepts them. Teardown triggers hypercorn's graceful shutdown
    and waits for it.
    """
    stop = asyncio.Event()
    servers: list[asyncio.Task[None]] = []

    async def start(app: EchoApp, names: Sequence[str] = ("127.0.0.1", "localhost")) -> str:
        pem = tmp_path / f"server-{len(servers)}.pem"
        ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(pem))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{listener.detach()}"]  # hypercorn owns the socket now
        config.certfile = config.keyfile = str(pem)
        config.graceful_timeout = 1.0
        config.loglevel = "WARNING"
        framework: Any = app  # hypercorn's typed ASGI events are more than this app needs
        servers.append(
            asyncio.create_task(hypercorn_serve(framework, config, shutdown_trigger=stop.wait))
        )
        return f"https://127.0.0.1:{port}"

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*servers), timeout=5.0)


async def test_http2_carries_concurrent_calls_on_one_connection(
    tls_serve: TLSServe, trusting: ssl.SSLContext
) -> None:
    base = await tls_serve(EchoApp())
    transport = HttpxTransport(verify=trusting)
    async with microcall.AsyncClient(base, transport=transport, timeout=5.0) as client:
        responses = await asyncio.gather(*(client.get("/echo") for _ in range(20)))
    seen = [response.json() for response in responses]
    assert {one["http_version"] for one in seen} == {"2"}
    assert len({one["client_port"] for one in seen}) == 1
    assert all(response.reason == "OK" for response in responses)


async def test_http2_off_speaks_http1(tls_serve: TLSServe, trusting: ssl.SSLContext) -> None:
    base = await tls_serve(EchoApp())
    transport = HttpxTransport(verify=trusting, http2=False)
    async with microcall.AsyncClient(base, transport=transport, timeout=5.0) as client:
        response = await client.get("/echo")
    assert response.json()["http_version"] == "1.1"


async def test_tls_is_verified_by_default(tls_serve: TLSServe) -> None:
    base = await tls_serve(EchoApp())
    async with microcall.AsyncClient(base, transport=HttpxTransport(), timeout=5.0) as client:
        with pytest.raises(microcall.ConnectError, match="certificate"):
            await client.get("/echo")


async def test_a_replica_by_address_keeps_the_name_in_host_and_tls(
    tls_serve: TLSServe, trusting: ssl.SSLContext
) -> None:
    # The certificate names the service only: verifying it against the
    # address would fail, so success shows the name went into the handshake.
    base = await tls_serve(EchoApp(), names=["catalog.test"])
    port = URL(base).port
    request = Request("GET", URL(f"https://catalog.test:{port}/echo"), {})
    replica = URL(f"https://127.0.0.1:{port}/echo")
    by_name, by_address = HttpxTransport(verify=trusting), HttpxTransport(verify=trusting)
    try:
        response = await by_name.send(request, replica, {}, 5.0)
        address_only = Request("GET", replica, {})
        with pytest.raises(microcall.ConnectError):
            await by_address.send(address_only, replica, {}, 5.0)
    finally:
        await by_name.aclose()
        await by_address.aclose()
    assert response.json()["host"] == f"catalog.test:{port}"
    assert response.url == replica


async def test_an_http2_losing_hedge_leaves_its_connection_in_use(
    tls_serve: TLSServe, trusting: ssl.SSLContext
) -> None:
    app = EchoApp()
    base = await tls_serve(app)
    transport = HttpxTransport(verify=trusting)
    strategy = microcall.hedged(0.05, linger=0)
    try:
        async with microcall.AsyncClient(base, transport=transport, timeout=5.0) as client:
            response = await client.get("/hold", strategy=strategy)
            first, hedge = response.attempts
            assert first.cancelled
            assert hedge.status == 200
            # The cancelled stream did not take the connection down with it.
            after = (await client.get("/echo")).json()
            assert after["client_port"] == response.json()["client_port"]
            assert after["http_version"] == "2"
    finally:
        app.release.set()
    assert app.held == 2


async def test_an_http2_attempt_timeout_is_typed_and_spares_the_connection(
    tls_serve: TLSServe, trusting: ssl.SSLContext
) -> None:
    app = EchoApp()
    base = await tls_serve(app)
    transport = HttpxTransport(verify=trusting)
    strategy = microcall.retry(2, attempt_timeout=0.15, backoff=QUICK_BACKOFF)
    try:
        async with microcall.AsyncClient(base, transport=transport, timeout=5.0) as client:
            before = (await client.get("/echo")).json()
            response = await client.get("/hold", strategy=strategy)
            after = (await client.get("/echo")).json()
    finally:
        app.release.set()
    first, retried = response.attempts
    assert first.error == "AttemptTimeout"
    assert retried.status == 200
    assert before["client_port"] == after["client_port"] == response.json()["client_port"]


def test_an_error_the_http2_stack_raises_unwrapped_is_a_read_error() -> None:
    """h2's own ProtocolError (or httpcore's ValueError) escapes httpx when an attempt is cut
    as its connection starts: a failed connection, retriable, never a bare exception."""
    import h2.connection
    import h2.exceptions

    request = Request("GET", URL("https://svc.test:8443/x"), {})
    with pytest.raises(h2.exceptions.ProtocolError) as raised:
        h2.connection.H2Connection().send_headers(1, [(":method", "GET")])  # before the preface
    mapped = map_error(raised.value, request, "127.0.0.1:8443")
    assert isinstance(mapped, microcall.ReadError)
    assert str(mapped).startswith("the connection to 127.0.0.1:8443 failed: ProtocolError")
    # A bug of ours is not one: it is left to raise as it is.
    assert map_error(ValueError("ours"), request) is None
