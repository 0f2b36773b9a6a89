"""Many calls with faults leave nothing behind: no file descriptors, no connections.

The servers run in this process, so the process's own descriptors and TCP
connections (psutil) show both ends. A baseline is taken after a warm-up
client has come and gone (the first call creates lazily what every later one
reuses), then the same number must be back once the client under test closes,
and while it is open the sockets stay within the pool's bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from aiohttp import web

import microcall
from microcall import ClientOptions
from tests.conftest import Serve
from tests.faultserver import Fault, FaultServer
from tests.faultserver import faults_fixture as faults_fixture  # provides the `faults` fixture

CALLS = 10_000
WORKERS = 32
POOL_LIMIT = 16
HANG_TIMEOUT = 0.02

# Sockets being closed are counted until the loop gets round to closing them;
# this much headroom over an exact bound absorbs that, never a leak (which
# grows with the number of calls, by thousands here).
CLOSING_SLACK = 4

QUICK_RETRY = microcall.retry(2, backoff=microcall.Backoff(base=0.001, cap=0.002))

PROCESS = psutil.Process()
# psutil 6 renamed connections() to net_connections(); pyproject allows 5.9.
_connections = getattr(PROCESS, "net_connections", None) or PROCESS.connections


def client_sockets(server_ports: set[int]) -> int:
    """Client-side TCP connections of this process to one of ``server_ports``."""
    return sum(
        1 for conn in _connections(kind="tcp") if conn.raddr and conn.raddr.port in server_ports
    )


async def settle(condition: Callable[[], bool], *, within: float = 3.0) -> bool:
    """Poll until ``condition()`` holds: the far end of a closed socket closes a moment later."""
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(0.02)
    return True


@dataclass
class Peak:
    fds: int = 0
    client_sockets: int = 0
    samples: int = 0
    ports: set[int] = field(default_factory=set)

    def sample(self) -> None:
        self.fds = max(self.fds, PROCESS.num_fds())
        self.client_sockets = max(self.client_sockets, client_sockets(self.ports))
        self.samples += 1


async def sample_until(stop: asyncio.Event, peak: Peak) -> None:
    while not stop.is_set():
        peak.sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.05)


async def service_app(peer_ports: set[int]) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        peer_ports.add(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(text="ok")

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/busy", busy)
    return app


KINDS = ("ok", "ok", "ok", "ok", "ok", "ok", "busy", "busy", "reset", "hang")
EXPECTED = {"ok": "200", "busy": "503", "reset": "ReadError", "hang": "DeadlineExceeded"}


async def one_mixed_call(client: microcall.AsyncClient, n: int, urls: dict[str, str]) -> str:
    """Call number ``n`` of the mix: 60% OK, 20% 503 (retried once), 10% reset, 10% hang."""
    kind = KINDS[n % len(KINDS)]
    try:
        if kind == "busy":
            response = await client.get(urls[kind], strategy=QUICK_RETRY)
        elif kind == "hang":
            response = await client.get(urls[kind], timeout=HANG_TIMEOUT)
        else:
            response = await client.get(urls[kind])
    except microcall.CallError as error:
        return f"{kind} {type(error).__name__}"
    return f"{kind} {response.status_code}"


async def run_calls(client: microcall.AsyncClient, count: int, urls: dict[str, str]) -> list[str]:
    numbers = itertools.count()
    outcomes: list[str] = []

    async def worker() -> None:
        while (n := next(numbers)) < count:
            outcomes.append(await one_mixed_call(client, n, urls))

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return outcomes


async def test_ten_thousand_mixed_calls_leave_no_descriptors_or_connections(
    serve: Serve, faults: FaultServer
) -> None:
    ok_peers: set[int] = set()
    base = await serve(await service_app(ok_peers))
    urls = {
        "ok": f"{base}/ok",
        "busy": f"{base}/busy",
        "reset": faults.url(Fault.RESET) + "/",
        "hang": faults.url(Fault.HANG) + "/",
    }
    ports = {int(url.rsplit(":", 1)[1].split("/")[0]) for url in urls.values()}
    # No retry budget: every 503 is retried once, whatever the mix's failure rate.
    settings: ClientOptions = {
        "limits": microcall.Limits(max_connections=POOL_LIMIT),
        "budget": None,
    }

    async with microcall.AsyncClient(**settings) as warm_up:
        await run_calls(warm_up, 40, urls)
    assert await settle(lambda: client_sockets(ports) == 0 and faults.open_connections == 0)
    baseline = PROCESS.num_fds()

    peak = Peak(ports=ports)
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_until(stop, peak))
    async with microcall.AsyncClient(**settings) as client:
        outcomes = await run_calls(client, CALLS, urls)
        stop.set()
        await sampler
        open_after_run = client_sockets(ports)

    assert len(outcomes) == CALLS
    expected = {f"{kind} {outcome}" for kind, outcome in EXPECTED.items()}
    # A machine busy enough may push a few calls past their deadline while they
    # wait for a pooled connection; anything else is a wrong outcome.
    late = {f"{kind} DeadlineExceeded" for kind in EXPECTED}
    assert set(outcomes) <= expected | late
    assert sum(outcome in expected for outcome in outcomes) >= 0.99 * CALLS
    assert peak.samples > 0
    # While open: the sockets stay within what the pool can hold (connections
    # in use, up to the limit, plus the idle keep-alive ones, which the aiohttp
    # limit does not count: see microcall.Limits), and the process's
    # descriptors are those sockets, their server ends, and little else.
    assert peak.client_sockets <= 2 * POOL_LIMIT + CLOSING_SLACK
    assert open_after_run <= POOL_LIMIT
    assert peak.fds - baseline <= 2 * (2 * POOL_LIMIT + CLOSING_SLACK)
    # Keep-alive did its job: thousands of OK calls over a handful of connections.
    assert len(ok_peers) <= 4 * POOL_LIMIT

    # Once closed: back to the baseline exactly, on both ends.
    assert await settle(lambda: client_sockets(ports) == 0)
    assert await settle(lambda: faults.open_connections == 0)
    assert await settle(lambda: PROCESS.num_fds() <= baseline), (PROCESS.num_fds(), baseline)


async def test_losing_hedges_release_or_close_their_connections(serve: Serve) -> None:
    hits: dict[str, int] = {}
    cancelled: list[str] = []

    async def first_copy_hangs(request: web.Request) -> web.Response:
        call = request.query["call"]
        hits[call] = hits.get(call, 0) + 1
        if hits[call] == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(call)
                raise
        return web.Response(text=call)

    app = web.Application()
    app.router.add_get("/", first_copy_hangs)
    base = await serve(app)
    ports = {int(base.rsplit(":", 1)[1])}
    # No retry budget: every call hedges, which is what is being looked at.
    settings: ClientOptions = {
        "limits": microcall.Limits(max_connections=POOL_LIMIT),
        "budget": None,
        "strategy": microcall.hedged(0.02),
        "timeout": 5.0,
    }

    async with microcall.AsyncClient(base, **settings) as warm_up:
        await warm_up.get("/", params={"call": "warm-up"})
    assert await settle(lambda: client_sockets(ports) == 0 and len(cancelled) == 1)
    baseline = PROCESS.num_fds()

    calls = 60
    concurrency = POOL_LIMIT // 2  # two attempts each: exactly the pool at the peak
    peak = Peak(ports=ports)
    async with microcall.AsyncClient(base, **settings) as client:
        for wave in range(calls // concurrency + 1):
            names = [f"c{wave}-{n}" for n in range(concurrency)][: calls - wave * concurrency]
            responses = await asyncio.gather(
                *(client.get("/", params={"call": name}) for name in names)
            )
            assert [response.text for response in responses] == names
            assert all(response.attempts[0].cancelled for response in responses)
            peak.sample()
        # Every loser's server-side work was stopped: its connection was closed
        # (a connection parked in the pool would leave the handler sleeping).
        assert await settle(lambda: len(cancelled) == calls + 1)
        assert peak.client_sockets <= POOL_LIMIT + CLOSING_SLACK
        assert client_sockets(ports) <= POOL_LIMIT

    assert await settle(lambda: client_sockets(ports) == 0)
    assert await settle(lambda: PROCESS.num_fds() <= baseline), (PROCESS.num_fds(), baseline)
