"""One client, several event loops in turn: each ``asyncio.run`` gets a working client, quietly.

A client made once and used from two ``asyncio.run`` calls (or pytest-asyncio's
loop per test) opens a new connection pool on the new loop; the old pool
was closed as its loop shut down, so nothing warns about it. Two loops using
one client at the same time are refused with a UsageError.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

import microcall
from microcall.errors import UsageError
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport
from tests.transports._keepalive_servers import Behaviour, ThreadedServer

TRANSPORTS: dict[str, Callable[[], object]] = {
    "aiohttp": AiohttpTransport,
    "h1": H1Transport,
    "httpx": lambda: HttpxTransport(http2=False),
}


@pytest.fixture
def servers() -> Iterator[tuple[str, str]]:
    with ThreadedServer(Behaviour()) as one, ThreadedServer(Behaviour()) as two:
        yield one.url, two.url


@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
@pytest.mark.parametrize(
    "shape",
    ["one url", "replicas, hedged", "replicas, retry"],
)
def test_a_client_works_across_two_asyncio_runs_without_a_warning(
    servers: tuple[str, str], transport: Callable[[], object], shape: str
) -> None:
    base: str | list[str] = servers[0] if shape == "one url" else list(servers)
    strategy = {
        "one url": microcall.single(),
        "replicas, hedged": microcall.hedged(delay=0.001),
        "replicas, retry": microcall.retry(attempts=2),
    }[shape]
    client = microcall.AsyncClient(base, strategy=strategy, transport=transport())  # type: ignore[arg-type]

    async def use() -> list[int]:
        return [(await client.get("/")).status_code for _ in range(10)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(use()) == [200] * 10
        assert asyncio.run(use()) == [200] * 10
        assert asyncio.run(use()) == [200] * 10
        asyncio.run(client.aclose())
        gc.collect()
    assert [str(warning.message) for warning in caught] == []


def test_a_loop_closed_without_asyncio_run_is_left_behind(servers: tuple[str, str]) -> None:
    client = microcall.AsyncClient(servers[0])
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(client.get("/")).status_code == 200
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()

    async def use() -> int:
        async with client:
            return (await client.get("/")).status_code

    assert asyncio.run(use()) == 200


async def test_two_loops_at_once_are_refused_with_a_usage_error(
    servers: tuple[str, str],
) -> None:
    client = microcall.AsyncClient(servers[0])
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:
        first = asyncio.run_coroutine_threadsafe(client.get("/"), other)
        assert first.result(10).status_code == 200
        with pytest.raises(UsageError, match="one running loop at a time"):
            await client.get("/")
        asyncio.run_coroutine_threadsafe(client.aclose(), other).result(10)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(10)
        other.close()


def test_the_loop_watch_follows_the_client_to_a_new_loop() -> None:
    from microcall._loopwatch import LoopWatch
    from microcall.policy.stalls import DEFAULT_INTERVAL

    watch = LoopWatch(busy=lambda: True)

    async def start() -> asyncio.AbstractEventLoop:
        watch.started(0.0)
        return asyncio.get_running_loop()

    asyncio.run(start())  # leaves its timer armed on a loop that is gone
    assert watch.watching

    async def start_and_tick() -> None:
        watch.started(0.0)
        await asyncio.sleep(DEFAULT_INTERVAL * 3)  # the watch's timer runs on this loop

    asyncio.run(start_and_tick())
    # Armed "at 0.0", the timer ran long after it was due: it saw a stall, so it ran.
    assert watch.stalls.last_end > 0.0
    watch.close()
