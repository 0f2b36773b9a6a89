"""The client's own overload: a bound on what it holds, queued time against the deadline, late loops.

Real aiohttp servers on 127.0.0.1 (the ``serve`` fixture) where the network
matters; a MockTransport where only the count of held calls does. No
assertion on absolute speed: times are compared with the deadlines and
delays the tests themselves set, with generous margins.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

import microcall
from microcall import AsyncClient, ClientOverloaded, ConfigurationError, DeadlineExceeded
from microcall.cache import MemoryBackend, ResponseCache
from microcall.testing import MockTransport, Reply
from tests.conftest import Serve

# Far longer than any test waits: a handler this slow only ends by being cancelled.
NEVER = 30.0


async def until(condition: Any, what: str) -> None:
    """Let the loop run until ``condition()`` holds (a bounded number of turns)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never reached: {what}")


def slow_app(delay: float, seen: list[web.Request] | None = None) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request)
        await asyncio.sleep(delay)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app


# ---------------------------------------------------------------- the bound


async def test_the_call_past_max_calls_is_refused_at_once_while_n_are_held() -> None:
    transport = MockTransport(lambda request: Reply(delay=NEVER))
    async with AsyncClient("http://svc:8080", transport=transport, max_calls=3) as client:
        held = [asyncio.ensure_future(client.get("/thing")) for _ in range(3)]
        await until(lambda: client.held == 3, "three calls held")

        with pytest.raises(ClientOverloaded) as refused:
            await client.get("/thing")
        error = refused.value
        assert isinstance(error, microcall.CallError)
        assert error.request is not None
        assert error.request.url.path == "/thing"
        assert error.attempts == ()
        assert "max_calls" in str(error)
        assert "3" in str(error)
        assert len(transport.sent) == 3  # the refused call was never sent
        assert not any(task.done() for task in held)

        # A slot freed is a slot to use again.
        held[0].cancel()
        await until(lambda: client.held == 2, "a call released")
        extra = asyncio.ensure_future(client.get("/thing"))
        await until(lambda: client.held == 3, "the freed slot taken")
        for task in [*held, extra]:
            task.cancel()
        await asyncio.gather(*held, extra, return_exceptions=True)
    assert client.held == 0


class Ends:
    """An observer that keeps how each call ended, and counts the attempts started."""

    def __init__(self) -> None:
        self.errors: list[BaseException | None] = []
        self.attempts = 0

    def call_started(self, request: object) -> Ends:
        return self

    def attempt_started(self, index: int, kind: object, url: object, headers: object) -> None:
        self.attempts += 1

    def call_ended(self, response: object, error: BaseException | None, attempts: Any) -> None:
        self.errors.append(error)


@pytest.mark.parametrize(
    "strategy", [microcall.single(), microcall.retry(3)], ids=["straight path", "planned path"]
)
async def test_a_refused_call_is_heard_by_observers_and_deposits_nothing(strategy: Any) -> None:
    transport = MockTransport(lambda request: Reply(delay=NEVER))
    ends = Ends()
    async with AsyncClient(
        "http://svc:8080", transport=transport, max_calls=2, strategy=strategy, observers=[ends]
    ) as client:
        held = [asyncio.ensure_future(client.get("/thing")) for _ in range(2)]
        await until(lambda: client.held == 2, "two calls held")
        budget = client.budget
        assert budget is not None
        deposited = budget.deposited

        with pytest.raises(ClientOverloaded):
            await client.get("/thing")

        # Heard as any other end, with no attempt; and no retry allowance
        # earned by a call that sent nothing.
        [error] = ends.errors
        assert isinstance(error, ClientOverloaded)
        assert ends.attempts == 2
        assert budget.deposited == deposited
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


@pytest.mark.parametrize(
    "options",
    [{}, {"headers": {"x-trace": "1"}}, {"cookies": {"session": "1"}}],
    ids=["bare call", "call with options", "call with its own cookies"],
)
async def test_a_refused_call_is_refused_alike_whatever_stands_before_the_engine(
    options: dict[str, Any],
) -> None:
    # A bare call or one with options is refused before its coroutine is
    # made; one with a session's work in front of it, by the engine.
    transport = MockTransport(lambda request: Reply(delay=NEVER))
    ends = Ends()
    async with AsyncClient(
        "http://svc:8080", transport=transport, max_calls=2, observers=[ends]
    ) as client:
        held = [asyncio.ensure_future(client.get("/thing")) for _ in range(2)]
        await until(lambda: client.held == 2, "two calls held")
        with pytest.raises(ClientOverloaded, match="max_calls"):
            await client.get("/thing", **options)
        [error] = ends.errors
        assert isinstance(error, ClientOverloaded)
        assert len(transport.sent) == 2
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    assert client.held == 0


async def test_a_client_that_holds_all_it_may_still_answers_from_its_cache() -> None:
    def reply(request: Any) -> Reply:
        if request.url.path.startswith("/slow"):
            return Reply(delay=NEVER)
        return Reply(headers={"Cache-Control": "max-age=60"}, content=b"kept")

    transport = MockTransport(reply)
    cache = ResponseCache(MemoryBackend())
    async with (
        cache,
        AsyncClient("http://svc:8080", transport=transport, max_calls=2, cache=cache) as client,
    ):
        await client.get("/kept")
        # Two different misses (the same one twice would share one call).
        held = [asyncio.ensure_future(client.get(f"/slow/{n}")) for n in range(2)]
        await until(lambda: client.held == 2, "two calls held")

        again = await client.get("/kept")  # needs no slot: the cache answers
        assert again.from_cache
        assert again.content == b"kept"
        with pytest.raises(ClientOverloaded):
            await client.get("/elsewhere")  # a miss needs a slot
        assert len(transport.sent) == 3
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


async def test_past_the_pool_calls_queue_in_order_and_past_max_calls_are_refused(
    serve: Serve,
) -> None:
    seen: list[web.Request] = []
    base = await serve(slow_app(0.2, seen))
    limits = microcall.Limits(max_connections=1)
    async with AsyncClient(base, limits=limits, max_calls=4, timeout=NEVER) as client:
        calls = [asyncio.ensure_future(client.get("/slow", params={"n": n})) for n in range(4)]
        await until(lambda: client.held == 4, "one in flight, three queued")
        with pytest.raises(ClientOverloaded):
            await client.get("/slow")
        responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 4
    # First come, first served; the refused call never reached the server.
    assert [request.query["n"] for request in seen] == ["0", "1", "2", "3"]


async def test_callers_that_call_again_at_once_never_exceed_max_calls(serve: Serve) -> None:
    # As many callers as max_calls, each calling again as soon as its call
    # ends: a slot handed to a waiter that has not run yet must not still
    # count it as queued, or the ending caller's next call is refused.
    base = await serve(slow_app(0.002))
    limits = microcall.Limits(max_connections=2)
    async with AsyncClient(base, limits=limits, max_calls=6, timeout=NEVER) as client:

        async def caller() -> None:
            for _ in range(10):
                await client.get("/slow")

        await asyncio.gather(*(caller() for _ in range(6)))
        assert client.held == 0


async def test_closing_with_calls_queued_ends_each_with_client_closed(serve: Serve) -> None:
    seen: list[web.Request] = []
    base = await serve(slow_app(NEVER, seen))
    limits = microcall.Limits(max_connections=1)
    client = AsyncClient(base, limits=limits, max_calls=4, timeout=NEVER)
    calls = [asyncio.ensure_future(client.get("/slow")) for _ in range(4)]
    await until(lambda: client.held == 4 and len(seen) == 1, "one in flight, three queued")
    await client.aclose()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, microcall.ClientClosed) for outcome in outcomes)
    assert client.held == 0
    assert len(seen) == 1  # the queued ones were never sent


async def test_time_queued_counts_against_the_deadline(serve: Serve) -> None:
    seen: list[web.Request] = []
    base = await serve(slow_app(0.5, seen))
    limits = microcall.Limits(max_connections=1)
    async with AsyncClient(base, limits=limits, timeout=NEVER) as client:
        built_first = time.monotonic()
        first = asyncio.ensure_future(client.get("/slow", params={"n": "first"}))
        built_second = time.monotonic()
        second = asyncio.ensure_future(client.get("/slow", params={"n": "second"}, timeout=3.0))
        await asyncio.gather(first, second)
    # The second call waited for the first one's slot, at least the 0.5 s the
    # server held it: what it sends downstream is what was left after that.
    granted = float(seen[1].headers["X-Request-Timeout"])
    assert granted <= 3.0 - 0.5 + (built_second - built_first) + 0.001


async def test_a_call_queued_past_its_deadline_gives_up_unsent(serve: Serve) -> None:
    seen: list[web.Request] = []
    base = await serve(slow_app(NEVER, seen))
    limits = microcall.Limits(max_connections=1)
    async with AsyncClient(base, limits=limits, timeout=NEVER) as client:
        blocker = asyncio.ensure_future(client.get("/slow"))
        await until(lambda: len(seen) == 1, "the first call holds the connection")
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded) as expired:
            await client.get("/slow", timeout=0.2)
        waited = time.monotonic() - began
        assert "queued" in str(expired.value)
        assert expired.value.attempts == ()
        assert waited >= 0.2  # never early
        assert not blocker.done()  # it ended long before the first call could
        assert len(seen) == 1  # never sent
        assert client.held == 1
        blocker.cancel()
        await asyncio.gather(blocker, return_exceptions=True)


# ---------------------------------------------------------------- a loop that runs late


async def test_calls_that_start_on_a_late_loop_end_at_their_deadline_not_after(
    serve: Serve,
) -> None:
    base = await serve(slow_app(NEVER))
    deadline = 1.0
    async with AsyncClient(base) as client:
        # Built now (the deadline starts), started only when the loop runs again.
        calls = [asyncio.ensure_future(client.get("/slow", timeout=deadline)) for _ in range(20)]
        time.sleep(deadline * 1.5)  # noqa: ASYNC251  # the loop is held up (the point)
        resumed = time.monotonic()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        ended = time.monotonic()
    assert all(isinstance(outcome, DeadlineExceeded) for outcome in outcomes), outcomes
    # Once the loop runs again, the calls already past their deadline end at
    # once: they do not arm a full deadline's timer from the moment they start.
    assert ended - resumed < deadline / 2


async def test_a_timer_that_fires_late_still_ends_the_call_as_deadline_exceeded(
    serve: Serve,
) -> None:
    seen: list[web.Request] = []
    base = await serve(slow_app(NEVER, seen))
    deadline = 0.3
    async with AsyncClient(base) as client:
        calls = [asyncio.ensure_future(client.get("/slow", timeout=deadline)) for _ in range(10)]
        await until(lambda: len(seen) == 10, "every call sent")
        time.sleep(deadline * 2)  # noqa: ASYNC251  # past every deadline, timers not yet run
        resumed = time.monotonic()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        ended = time.monotonic()
    assert all(isinstance(outcome, DeadlineExceeded) for outcome in outcomes), outcomes
    assert ended - resumed < deadline


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_max_calls_is_validated_at_construction(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_calls"):
        AsyncClient("http://svc:8080", max_calls=bad)
    with pytest.raises(ConfigurationError, match="max_calls"):
        microcall.Client("http://svc:8080", max_calls=bad)


def test_the_front_doors_on_a_background_loop_are_bounded_too() -> None:
    transport = MockTransport(lambda request: Reply(delay=NEVER))
    with microcall.FuturesClient("http://svc:8080", transport=transport, max_calls=2) as client:
        # The loop starts calls in the order they were handed over: the first
        # two hold both places when the third starts.
        held = [client.get("/thing") for _ in range(2)]
        refused = client.get("/thing")
        with pytest.raises(ClientOverloaded):
            refused.result(timeout=NEVER)
        for future in held:
            future.cancel()
