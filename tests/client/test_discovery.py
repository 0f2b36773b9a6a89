"""Discovery: a client whose replicas are the addresses a DNS name resolves to.

The name is ``localhost`` and the servers listen on loopback addresses only.
``localhost`` may resolve to ::1 as well as 127.0.0.1 while the servers
listen on 127.0.0.1 alone; the calls retry, so an attempt refused on ::1
moves to the other address, and the assertions hold either way.

Re-resolution is observed by wrapping :func:`microcall._replicas.resolve_bases`
with a spy that counts the lookups and passes them through to the real
resolver. One test has the spy answer with another loopback address (a
second server on 127.0.0.2, same port), the way a headless service's answer
changes when a pod is replaced; the traffic still goes over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from yarl import URL

import microcall
from microcall import _replicas
from microcall._replicas import Discovery
from tests.conftest import Serve

QUICK_RETRY = microcall.retry(3, backoff=microcall.Backoff(base=0.001, cap=0.002))
EVERY = 0.2


class Seen:
    """What one server received: the Host header of every request."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


Resolver = Callable[[str], Awaitable[list[URL]]]


class Spy:
    """Counts the lookups; answers from the real resolver unless told an answer."""

    def __init__(self, real: Resolver) -> None:
        self.real = real
        self.lookups = 0
        self.answer: list[URL] | None = None
        self.failing = False

    async def __call__(self, url: str) -> list[URL]:
        self.lookups += 1
        if self.failing:
            raise OSError("name resolution failed")
        if self.answer is not None:
            return list(self.answer)
        return await self.real(url)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(_replicas.resolve_bases)
    monkeypatch.setattr(_replicas, "resolve_bases", spy)
    return spy


async def wait_for(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    give_up = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < give_up, "condition not met in time"
        await asyncio.sleep(0.02)


def port_of(base: str) -> int:
    port = URL(base).port
    assert port is not None
    return port


async def test_the_name_is_resolved_and_kept_in_the_host_header(serve: Serve) -> None:
    seen = Seen()
    port = port_of(await serve(seen.app()))
    discovery = Discovery(url=f"http://localhost:{port}", every=EVERY)
    async with microcall.AsyncClient(discovery, timeout=5.0, strategy=QUICK_RETRY) as client:
        responses = [await client.get(f"/item/{n}") for n in range(10)]
        replicas = client.replicas
        assert replicas is not None
        addresses = {URL(e.address).host for e in replicas.balancer.endpoints}

    assert [response.status_code for response in responses] == [200] * 10
    # The endpoints are addresses, not the name (::1 too, where localhost has it).
    assert "127.0.0.1" in addresses
    assert "localhost" not in addresses
    assert addresses <= {"127.0.0.1", "::1"}
    # Every request reached the server by address and still named the host.
    assert seen.hosts == [f"localhost:{port}"] * 10
    assert {attempt.endpoint for r in responses for attempt in r.attempts if attempt.status} == {
        f"127.0.0.1:{port}"
    }


async def test_calls_that_arrive_during_the_first_lookup_wait_for_it(
    serve: Serve, spy: Spy
) -> None:
    seen = Seen()
    port = port_of(await serve(seen.app()))
    real = spy.real

    async def slow(url: str) -> list[URL]:
        await asyncio.sleep(0.2)  # a name server taking its time
        return await real(url)

    spy.real = slow
    discovery = Discovery(url=f"http://localhost:{port}", every=60)
    async with microcall.AsyncClient(discovery, timeout=5.0, strategy=QUICK_RETRY) as client:
        responses = await asyncio.gather(*(client.get(f"/item/{n}") for n in range(10)))

    assert [response.status_code for response in responses] == [200] * 10
    assert spy.lookups == 1
    # None went out to the name itself before it was resolved.
    endpoints = {attempt.endpoint for r in responses for attempt in r.attempts}
    assert not any(endpoint.startswith("localhost") for endpoint in endpoints), endpoints


async def test_the_name_is_resolved_again_periodically(serve: Serve, spy: Spy) -> None:
    seen = Seen()
    port = port_of(await serve(seen.app()))
    discovery = Discovery(url=f"http://localhost:{port}", every=EVERY)
    async with microcall.AsyncClient(discovery, timeout=5.0, strategy=QUICK_RETRY) as client:
        assert spy.lookups == 0  # nothing resolved before the first call
        await client.get("/")
        assert spy.lookups == 1
        await wait_for(lambda: spy.lookups >= 3)
        assert (await client.get("/")).status_code == 200
    # Closing the client stops the re-resolution.
    stopped_at = spy.lookups
    await asyncio.sleep(3 * EVERY)
    assert spy.lookups == stopped_at


@pytest.fixture
async def second_address() -> AsyncIterator[Callable[[web.Application, int], Awaitable[None]]]:
    """Serve an app on 127.0.0.2 at a given port (another loopback address)."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.2", port).start()

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_changed_answer_moves_the_traffic_to_the_new_address(
    serve: Serve,
    spy: Spy,
    second_address: Callable[[web.Application, int], Awaitable[None]],
) -> None:
    old, new = Seen(), Seen()
    port = port_of(await serve(old.app()))
    await second_address(new.app(), port)
    discovery = Discovery(url=f"http://localhost:{port}", every=EVERY)
    async with microcall.AsyncClient(discovery, timeout=5.0, strategy=QUICK_RETRY) as client:
        assert (await client.get("/")).status_code == 200
        assert len(old.hosts) == 1

        # The pod behind the name was replaced: the answer now holds only 127.0.0.2.
        spy.answer = [URL(f"http://127.0.0.2:{port}")]
        seen_by = spy.lookups
        await wait_for(lambda: spy.lookups > seen_by)
        responses = [await client.get(f"/item/{n}") for n in range(10)]
        replicas = client.replicas
        assert replicas is not None
        addresses = [e.address for e in replicas.balancer.endpoints]

    assert all(response.status_code == 200 for response in responses)
    assert len(old.hosts) == 1
    assert new.hosts == [f"localhost:{port}"] * 10
    assert [URL(address).host for address in addresses] == ["127.0.0.2"]


async def test_a_failed_re_resolution_keeps_the_endpoints(serve: Serve, spy: Spy) -> None:
    seen = Seen()
    port = port_of(await serve(seen.app()))
    discovery = Discovery(url=f"http://localhost:{port}", every=EVERY)
    async with microcall.AsyncClient(discovery, timeout=5.0, strategy=QUICK_RETRY) as client:
        assert (await client.get("/")).status_code == 200
        spy.failing = True
        seen_by = spy.lookups
        await wait_for(lambda: spy.lookups >= seen_by + 2)
        responses = [await client.get(f"/item/{n}") for n in range(5)]
    assert [response.status_code for response in responses] == [200] * 5
    assert len(seen.hosts) == 6
