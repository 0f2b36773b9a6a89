"""Calls through a real forward proxy on 127.0.0.1, on every transport and front door.

The proxy is tests/proxyserver.py (absolute-form forwarding, CONNECT
tunnels, Basic proxy auth, a mode that refuses tunnels). Targets are aiohttp
apps over plain HTTP and over TLS with a throwaway trustme CA that only the
test's own SSLContext trusts, so a call that reaches the HTTPS target through
the tunnel has verified the target's certificate end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc.aio
import pytest
import trustme
from aiohttp import web
from yarl import URL

import microcall
from microcall.grpc import AsyncChannel, ChannelOptions
from microcall.transports._base import Transport
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport
from tests.proxyserver import ForwardProxy, closed_port
from tests.server._waiting import eventually

TRANSPORTS: dict[str, Callable[..., Transport]] = {
    "h1": H1Transport,
    "aiohttp": AiohttpTransport,
    "httpx": HttpxTransport,
}
# Generous: the machine running the tests may be loaded.
TIMEOUT = 10.0
# How long past its deadline a call may still be running on a busy machine.
MARGIN = 1.0

ENV_NAMES = [f"{name}_proxy" for name in ("http", "https", "all", "no")] + [
    f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "NO")
]


def target_app() -> web.Application:
    """Answers with what reached the target: path, Host, and any proxy header (there must be none)."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "path": request.path_qs,
                "host": request.headers.get("Host"),
                "proxy_authorization": request.headers.get("Proxy-Authorization"),
            }
        )

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/moved", moved)
    app.router.add_get("/{tail:.*}", echo)
    return app


class Targets:
    """One app served twice: ``http`` plain, ``https`` with a certificate for 127.0.0.1 and localhost."""

    http: str
    https: str
    trusting: ssl.SSLContext


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def targets(ca: trustme.CA) -> AsyncIterator[Targets]:
    async with targets_of(ca) as found:
        yield found


@contextlib.asynccontextmanager
async def targets_of(ca: trustme.CA) -> AsyncIterator[Targets]:
    runner = web.AppRunner(target_app(), access_log=None)
    await runner.setup()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    secure = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await plain.start()
    await secure.start()
    found = Targets()
    http_port, https_port = (runner.addresses[0][1], runner.addresses[1][1])
    found.http = f"http://127.0.0.1:{http_port}"
    found.https = f"https://127.0.0.1:{https_port}"
    found.trusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(found.trusting)
    try:
        yield found
    finally:
        await runner.cleanup()


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy() as running:
        yield running


@pytest.fixture
async def authenticating() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy(auth=("reader", "p@ss:word")) as running:
        yield running


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine running the tests leaks in."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    return monkeypatch


def client(kind: str, targets: Targets, **options: Any) -> microcall.AsyncClient:
    transport = TRANSPORTS[kind](verify=targets.trusting, **options)
    return microcall.AsyncClient(transport=transport, timeout=TIMEOUT)


per_transport = pytest.mark.parametrize("kind", list(TRANSPORTS))


# ------------------------------------------------------------------ through the proxy


@per_transport
async def test_plain_http_is_forwarded_in_absolute_form(
    kind: str, targets: Targets, proxy: ForwardProxy
) -> None:
    async with client(kind, targets, proxy=proxy.url) as through:
        first = await through.get(f"{targets.http}/books?q=1")
        second = await through.get(f"{targets.http}/books/2")
    assert first.status_code == second.status_code == 200
    assert first.json()["path"] == "/books?q=1"
    assert first.json()["host"] == URL(targets.http).authority
    assert [(seen.method, seen.target) for seen in proxy.seen] == [
        ("GET", f"{targets.http}/books?q=1"),
        ("GET", f"{targets.http}/books/2"),
    ]


@per_transport
async def test_https_goes_through_a_connect_tunnel_with_the_certificate_verified(
    kind: str, targets: Targets, proxy: ForwardProxy
) -> None:
    async with client(kind, targets, proxy=proxy.url) as through:
        first = await through.get(f"{targets.https}/books")
        second = await through.get(f"{targets.https}/books")
    assert first.json()["path"] == second.json()["path"] == "/books"
    # One tunnel, kept alive for the second call.
    assert [(seen.method, seen.target) for seen in proxy.seen] == [
        ("CONNECT", URL(targets.https).authority)
    ]


@per_transport
async def test_a_target_certificate_that_does_not_verify_is_a_connect_error_not_the_proxys(
    kind: str, targets: Targets, proxy: ForwardProxy
) -> None:
    transport = TRANSPORTS[kind](proxy=proxy.url)  # the system's CAs: not the test CA
    async with microcall.AsyncClient(transport=transport, timeout=TIMEOUT) as through:
        with pytest.raises(microcall.ConnectError) as caught:
            await through.get(f"{targets.https}/books")
    assert not isinstance(caught.value, microcall.ProxyError)
    assert "certificate" in str(caught.value).lower()


@per_transport
async def test_proxy_credentials_reach_the_proxy_only(
    kind: str, targets: Targets, authenticating: ForwardProxy
) -> None:
    async with client(kind, targets, proxy=authenticating.url) as through:
        plain = await through.get(f"{targets.http}/a")
        tunnelled = await through.get(f"{targets.https}/b")
    assert plain.json()["proxy_authorization"] is None
    assert tunnelled.json()["proxy_authorization"] is None
    methods = [seen.method for seen in authenticating.seen]
    assert methods == ["GET", "CONNECT"]
    assert all(seen.headers.get("proxy-authorization") for seen in authenticating.seen)


@per_transport
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_407_is_a_proxy_error_naming_the_proxy(
    kind: str, scheme: str, targets: Targets, authenticating: ForwardProxy
) -> None:
    target = targets.http if scheme == "http" else targets.https
    without = f"http://{authenticating.address}"
    wrong = f"http://reader:not-the-password@{authenticating.address}"
    for given, hint in ((without, "give its credentials"), (wrong, "rejected the credentials")):
        async with client(kind, targets, proxy=given) as through:
            with pytest.raises(microcall.ProxyError) as caught:
                await through.get(f"{target}/books")
        message = str(caught.value)
        assert f"proxy {authenticating.address} answered 407" in message
        assert hint in message
        assert "not-the-password" not in message
        assert URL(target).authority in message  # the target it was calling


@per_transport
async def test_a_refused_tunnel_is_a_proxy_error(kind: str, targets: Targets) -> None:
    async with (
        ForwardProxy(refuse_connect=True) as refusing,
        client(kind, targets, proxy=refusing.url) as through,
    ):
        with pytest.raises(microcall.ProxyError, match="403"):
            await through.get(f"{targets.https}/books")


@per_transport
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_that_refuses_connections_is_a_proxy_error(
    kind: str, scheme: str, targets: Targets
) -> None:
    port = closed_port()
    target = targets.http if scheme == "http" else targets.https
    async with client(kind, targets, proxy=f"http://user:hunter2@127.0.0.1:{port}") as through:
        with pytest.raises(microcall.ProxyError) as caught:
            await through.get(f"{target}/books")
    message = str(caught.value)
    assert f"proxy 127.0.0.1:{port} cannot be reached" in message
    assert "hunter2" not in message
    assert "user" not in message
    assert isinstance(caught.value, microcall.ConnectError)  # what retries and breakers see


class SilentProxy:
    """Accepts connections and reads, never answers: a proxy that hangs.

    ``accepted`` and ``closed`` count the connections opened, and those the client closed.
    """

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.accepted += 1
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.closed += 1

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()


@per_transport
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_that_hangs_ends_the_call_at_its_deadline(
    kind: str, scheme: str, targets: Targets
) -> None:
    target = targets.http if scheme == "http" else targets.https
    silent = SilentProxy()
    async with silent as url:
        transport = TRANSPORTS[kind](verify=targets.trusting, proxy=url)
        async with microcall.AsyncClient(transport=transport, timeout=0.3) as through:
            started = time.monotonic()
            with pytest.raises(microcall.DeadlineExceeded):
                await through.get(f"{target}/books")
            assert time.monotonic() - started < 0.3 + MARGIN
            # The abandoned attempt closed its connection: the proxy sees it go.
            await eventually(lambda: silent.accepted >= 1 and silent.closed == silent.accepted)


@pytest.mark.parametrize("kind", ["h1", "aiohttp"])  # httpx does not resend (docs/transports.md)
async def test_a_proxy_connection_closed_while_idle_is_resent_on_a_fresh_one(
    kind: str, targets: Targets
) -> None:
    # The proxy closes each connection after one answer, saying nothing: the
    # next call either sees the close first or meets the dead connection and
    # is resent on a fresh one. Either way it is answered.
    async with (
        ForwardProxy(close_after_answer=True) as closing,
        client(kind, targets, proxy=closing.url) as through,
    ):
        statuses = [(await through.get(f"{targets.http}/n/{n}")).status_code for n in range(20)]
    assert statuses == [200] * 20
    assert len(closing.seen) >= 20


# ------------------------------------------------------------------ the environment


@per_transport
async def test_trust_env_uses_the_proxy_variables(
    kind: str, targets: Targets, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("http_proxy", proxy.url)
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    async with client(kind, targets, trust_env=True) as through:
        await through.get(f"{targets.http}/a")
        await through.get(f"{targets.https}/b")
    assert [seen.method for seen in proxy.seen] == ["GET", "CONNECT"]


@per_transport
async def test_all_proxy_stands_in_for_a_scheme_without_its_own(
    kind: str, targets: Targets, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("ALL_PROXY", proxy.url)
    async with client(kind, targets, trust_env=True) as through:
        await through.get(f"{targets.https}/b")
    assert [seen.method for seen in proxy.seen] == ["CONNECT"]


@per_transport
async def test_no_proxy_hosts_go_direct(
    kind: str, targets: Targets, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", "example.com, 127.0.0.1")
    async with client(kind, targets, trust_env=True) as through:
        plain = await through.get(f"{targets.http}/a")
        secure = await through.get(f"{targets.https}/b")
    assert plain.status_code == secure.status_code == 200
    assert proxy.seen == []


@per_transport
async def test_each_redirect_hop_is_routed_on_its_own(
    kind: str, targets: Targets, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    # 127.0.0.1 through the proxy; localhost (the same server) is in NO_PROXY.
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", "localhost")
    elsewhere = targets.http.replace("127.0.0.1", "localhost") + "/landed"
    async with client(kind, targets, trust_env=True) as through:
        response = await through.get(f"{targets.http}/moved", params={"to": elsewhere})
    assert response.json()["path"] == "/landed"
    assert [URL(seen.target).path for seen in proxy.seen] == ["/moved"]


@per_transport
async def test_without_trust_env_the_variables_are_ignored(
    kind: str, targets: Targets, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("https_proxy", proxy.url)
    clean_env.setenv("ALL_PROXY", proxy.url)
    async with client(kind, targets) as direct:
        await direct.get(f"{targets.http}/a")
        await direct.get(f"{targets.https}/b")
    assert proxy.seen == []


# ------------------------------------------------------------------ the front doors


async def test_async_client_proxy_option_uses_the_default_transport(
    targets: Targets, proxy: ForwardProxy
) -> None:
    async with microcall.AsyncClient(
        targets.https, proxy=proxy.url, verify=targets.trusting, timeout=TIMEOUT
    ) as through:
        response = await through.get("/books")
    assert isinstance(through._engine.transport, H1Transport)
    assert response.json()["path"] == "/books"
    assert [seen.method for seen in proxy.seen] == ["CONNECT"]


async def test_client_through_the_proxy(targets: Targets, proxy: ForwardProxy) -> None:
    def work() -> tuple[int, int]:
        with microcall.Client(
            targets.http, proxy=proxy.url, verify=targets.trusting, timeout=TIMEOUT
        ) as blocking:
            plain = blocking.get("/a").status_code
            secure = blocking.get(f"{targets.https}/b").status_code
        return plain, secure

    assert await asyncio.to_thread(work) == (200, 200)
    assert [seen.method for seen in proxy.seen] == ["GET", "CONNECT"]


async def test_futures_client_through_the_proxy(targets: Targets, proxy: ForwardProxy) -> None:
    def work() -> list[int]:
        with microcall.FuturesClient(
            targets.http, proxy=proxy.url, verify=targets.trusting, timeout=TIMEOUT
        ) as futures:
            pending = [futures.get("/a"), futures.get(f"{targets.https}/b")]
            return [future.result(timeout=TIMEOUT).status_code for future in pending]

    assert await asyncio.to_thread(work) == [200, 200]
    assert sorted(seen.method for seen in proxy.seen) == ["CONNECT", "GET"]


async def test_client_with_trust_env_and_no_proxy(
    targets: Targets, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", "*")

    def work() -> int:
        with microcall.Client(targets.http, trust_env=True, timeout=TIMEOUT) as blocking:
            return blocking.get("/a").status_code

    assert await asyncio.to_thread(work) == 200
    assert proxy.seen == []


# ------------------------------------------------------------------ gRPC channels


@pytest.fixture
async def recommendations() -> AsyncIterator[str]:
    from examples.recommendations.server import RecommendationService

    from microcall.examples_pb.recommendations_pb2_grpc import (
        add_RecommendationsServicer_to_server,
    )

    server = grpc.aio.server()
    add_RecommendationsServicer_to_server(RecommendationService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def recommend(target: str, options: ChannelOptions) -> int:
    from microcall.examples_pb.recommendations_pb2 import SCIENCE_FICTION, RecommendationRequest
    from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub

    async with AsyncChannel(target, options) as channel:
        reply = await RecommendationsStub(channel).Recommend(
            RecommendationRequest(category=SCIENCE_FICTION, max_results=2), timeout=TIMEOUT
        )
    return len(reply.recommendations)


async def test_grpc_channels_follow_grpcs_own_proxy_settings(
    recommendations: str, proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    # What docs/proxies.md says of gRPC: grpc core reads grpc_proxy itself,
    # and channel arguments set a proxy or turn the environment's off.
    clean_env.delenv("grpc_proxy", raising=False)
    clean_env.delenv("no_grpc_proxy", raising=False)
    given = ChannelOptions(grpc_options=[("grpc.http_proxy", proxy.url)])
    assert await recommend(recommendations, given) == 2
    assert [seen.method for seen in proxy.seen] == ["CONNECT"]
    clean_env.setenv("grpc_proxy", proxy.url)
    assert await recommend(recommendations, ChannelOptions()) == 2
    assert [seen.method for seen in proxy.seen] == ["CONNECT", "CONNECT"]
    off = ChannelOptions(grpc_options=[("grpc.enable_http_proxy", 0)])
    assert await recommend(recommendations, off) == 2
    assert len(proxy.seen) == 2


def test_the_default_transport_tunnels_on_uvloop_too(ca: trustme.CA) -> None:
    # loop.start_tls over the tunnel is the loop's own: uvloop has its own implementation.
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[str]:
        async with targets_of(ca) as found, ForwardProxy() as running:
            transport = H1Transport(verify=found.trusting, proxy=running.url)
            async with microcall.AsyncClient(transport=transport, timeout=TIMEOUT) as through:
                response = await through.get(f"{found.https}/books")
            assert response.json()["path"] == "/books"
            return [seen.method for seen in running.seen]

    assert uvloop.run(main()) == ["CONNECT"]
