"""The blocking and futures front doors against real servers: threads, futures, fork, context.

The servers run on the test's event loop; the blocking code under test runs
in worker threads (``asyncio.to_thread``), as it would in a WSGI server or a
script, so the test's loop stays free to answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from aiohttp import web

import microcall
from microcall import Response
from tests.children import wait_for_child
from tests.conftest import Serve
from tests.faultserver import Fault, FaultServer
from tests.faultserver import faults_fixture as faults_fixture  # provides the `faults` fixture

T = TypeVar("T")

THREADS = 16
CALLS_PER_THREAD = 20


class Service:
    """An aiohttp app that echoes what the client sent and notes who sent it."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.peer_ports: list[int] = []
        self.numbers: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = web.Application()
        self.app.router.add_get("/echo", self.echo)
        self.app.router.add_get("/headers", self.headers)
        self.app.router.add_route("*", "/status/{codes}", self.status)

    def _arrived(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        assert peer is not None
        self.peer_ports.append(peer[1])

    async def echo(self, request: web.Request) -> web.Response:
        self._arrived(request)
        n = int(request.query.get("n", "0"))
        self.numbers.append(n)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = float(request.query.get("delay", self.delay))
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        return web.json_response({"n": n})

    async def headers(self, request: web.Request) -> web.Response:
        self._arrived(request)
        return web.json_response(
            {
                "timeout": request.headers["X-Request-Timeout"],
                "priority": request.headers.get("X-Request-Priority"),
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        # /status/503,503,200: answer each in turn, then keep answering the last.
        self._arrived(request)
        codes = request.match_info["codes"].split(",")
        seen = len(self.peer_ports) - 1
        return web.Response(status=int(codes[min(seen, len(codes) - 1)]))


async def start(serve: Serve, service: Service) -> str:
    return await serve(service.app)


async def in_thread(work: Callable[[], T]) -> T:
    """Run blocking client code off the test's loop, which must keep serving."""
    return await asyncio.to_thread(work)


# ------------------------------------------------------------------ Client


async def test_one_client_shared_by_16_threads_reuses_connections(serve: Serve) -> None:
    service = Service(delay=0.002)
    base = await start(serve, service)

    def work() -> list[list[int]]:
        barrier = threading.Barrier(THREADS)
        with microcall.Client(base, timeout=10.0) as client:

            def one_thread(t: int) -> list[int]:
                barrier.wait()  # all sixteen at once, not one after another
                numbers = range(t * 1000, t * 1000 + CALLS_PER_THREAD)
                return [client.get("/echo", params={"n": n}).json()["n"] for n in numbers]

            with cf.ThreadPoolExecutor(THREADS) as pool:
                together = list(pool.map(one_thread, range(THREADS)))

            # Then one new thread after another: each picks up a connection that
            # other threads opened and left in the pool.
            for t in range(THREADS, 2 * THREADS):
                thread = threading.Thread(target=client.get, args=(f"/echo?n={t * 1000}",))
                thread.start()
                thread.join()
            return together

    results = await in_thread(work)
    # Every thread got its own answers back, none crossed with another's.
    assert results == [list(range(t * 1000, t * 1000 + CALLS_PER_THREAD)) for t in range(THREADS)]
    calls = THREADS * CALLS_PER_THREAD
    assert len(service.peer_ports) == calls + THREADS
    # At most one connection per thread calling at once, shared by all of them.
    assert len(set(service.peer_ports[:calls])) <= THREADS
    assert service.max_in_flight > 1
    assert set(service.peer_ports[calls:]) <= set(service.peer_ports[:calls])


async def test_client_inside_a_running_event_loop_names_async_client(serve: Serve) -> None:
    base = await start(serve, Service())
    client = microcall.Client(base, timeout=5.0)
    try:
        with pytest.raises(microcall.UsageError, match="AsyncClient"):
            client.get("/echo")
    finally:
        await in_thread(client.close)


async def test_a_deadline_set_in_the_calling_thread_reaches_the_server(serve: Serve) -> None:
    service = Service()
    base = await start(serve, service)

    def work() -> list[dict[str, str]]:
        seen = []
        with (
            microcall.Client(base, timeout=10.0) as client,
            microcall.FuturesClient(base, timeout=10.0) as futures,
        ):
            with microcall.deadline(0.5):
                seen.append(client.get("/headers").json())
                seen.append(futures.get("/headers").result().json())
            with microcall.priority("high"):
                seen.append(client.get("/headers").json())
                seen.append(futures.get("/headers").result().json())
            seen.append(client.get("/headers").json())
        return seen

    seen = await in_thread(work)
    timeouts = [float(answer["timeout"]) for answer in seen]
    assert 0 < timeouts[0] <= 0.5
    assert 0 < timeouts[1] <= 0.5
    assert all(5.0 < timeout <= 10.0 for timeout in timeouts[2:])
    # Nothing sent outside the block: the server's header echo reads None.
    assert [answer["priority"] for answer in seen] == [None, None, "high", "high", None]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_a_client_survives_fork(serve: Serve) -> None:
    service = Service()
    base = await start(serve, service)

    def work() -> tuple[int, list[int]]:
        with (
            microcall.Client(base, timeout=5.0) as client,
            microcall.FuturesClient(base, timeout=5.0) as futures,
        ):
            assert client.get("/echo", params={"n": 1}).status_code == 200
            assert futures.get("/echo", params={"n": 10}).result().status_code == 200
            pid = os.fork()
            if pid == 0:  # the child: whatever happens, never return into pytest
                code = 70
                try:
                    answer = client.get("/echo", params={"n": 2})
                    later = futures.get("/echo", params={"n": 20}).result(timeout=10.0)
                    code = 0 if (answer.json(), later.json()) == ({"n": 2}, {"n": 20}) else 71
                finally:
                    os._exit(code)
            status = wait_for_child(pid, within=15.0)
            # The parent's clients are untouched by the fork.
            assert client.get("/echo", params={"n": 3}).status_code == 200
            assert futures.get("/echo", params={"n": 30}).result().status_code == 200
            return status, list(service.numbers)

    status, numbers = await in_thread(work)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0
    assert sorted(numbers) == [1, 2, 3, 10, 20, 30]
    # The child opened its own connection; it did not reuse the parent's socket.
    parent_port = service.peer_ports[service.numbers.index(1)]
    child_port = service.peer_ports[service.numbers.index(2)]
    assert child_port != parent_port


async def test_init_works_like_microrequests(serve: Serve) -> None:
    service = Service()
    base = await start(serve, service)

    def work() -> tuple[microcall.Client, Response, int, Response, int]:
        mr = microcall.init(max_retries=2, pool_connections=10, pool_size=5)
        with mr:
            retried = mr.get(f"{base}/status/503,503,200")
            hits_after_get = len(service.peer_ports)
            posted = mr.post(f"{base}/status/503")
            return mr, retried, hits_after_get, posted, len(service.peer_ports) - hits_after_get

    mr, retried, get_hits, posted, post_hits = await in_thread(work)
    assert isinstance(mr, microcall.Client)
    assert retried.status_code == 200
    assert [attempt.status for attempt in retried.attempts] == [503, 503, 200]
    assert get_hits == 3
    # A POST is not idempotent: microrequests-style retries do not resend it.
    assert posted.status_code == 503
    assert post_hits == 1


async def test_init_pool_size_bounds_connections_per_host(serve: Serve) -> None:
    service = Service(delay=0.02)
    base = await start(serve, service)

    def work() -> None:
        with (
            microcall.init(max_retries=2, pool_connections=10, pool_size=5) as mr,
            cf.ThreadPoolExecutor(THREADS) as pool,
        ):
            for response in pool.map(lambda n: mr.get(f"{base}/echo?n={n}"), range(64)):
                assert response.status_code == 200

    await in_thread(work)
    assert service.max_in_flight <= 5
    assert len(set(service.peer_ports)) <= 5


# ------------------------------------------------------------------ FuturesClient


async def test_a_thousand_futures_in_flight_complete_with_as_completed_and_wait(
    serve: Serve,
) -> None:
    service = Service(delay=0.005)
    base = await start(serve, service)
    count = 1000

    def work() -> tuple[list[int], list[int]]:
        with microcall.FuturesClient(base, timeout=30.0) as client:
            futures = [client.get("/echo", params={"n": n}) for n in range(count)]
            by_completion = [future.result().json()["n"] for future in cf.as_completed(futures)]
            futures = [client.get("/echo", params={"n": n}) for n in range(count)]
            done, not_done = cf.wait(futures, timeout=30.0)
            assert not not_done
            waited = [future.result().json()["n"] for future in done]
        return by_completion, waited

    by_completion, waited = await in_thread(work)
    assert sorted(by_completion) == list(range(count))
    assert sorted(waited) == list(range(count))
    # Many were in flight together, and no more than the bound (the pool size).
    assert 1 < service.max_in_flight <= microcall.Limits().max_connections


async def test_exceptions_surface_at_result(faults: FaultServer) -> None:
    def work() -> tuple[BaseException | None, type[BaseException]]:
        with microcall.FuturesClient(faults.url(Fault.REFUSE), timeout=5.0) as client:
            future = client.get("/")
            error = future.exception(timeout=10.0)
            try:
                future.result()
            except microcall.CallError as raised:
                return error, type(raised)
        raise AssertionError("a refused call produced a response")

    error, raised = await in_thread(work)
    assert isinstance(error, microcall.ConnectError)
    assert raised is microcall.ConnectError
    assert len(error.attempts) == 1
    assert error.request is not None


async def test_response_hook_runs_off_the_callers_thread_before_the_future_resolves(
    serve: Serve,
) -> None:
    base = await start(serve, Service())
    hook_threads: list[int] = []
    call_hook_threads: list[int] = []
    hooks_on_a_loop: list[bool] = []

    def slow_hook(response: Response) -> None:
        time.sleep(0.05)  # a future that resolved early would be seen without this record
        hooks_on_a_loop.append(asyncio._get_running_loop() is not None)
        hook_threads.append(threading.get_ident())

    def call_hook(response: Response) -> None:
        call_hook_threads.append(threading.get_ident())

    def work() -> tuple[int, list[int], list[int], int]:
        seen_in_callback: list[int] = []
        with microcall.FuturesClient(base, timeout=5.0, hooks={"response": slow_hook}) as client:
            hooks = {"response": call_hook}
            future = client.get("/echo", hooks=hooks)  # type: ignore[call-arg]  # verbs' types omit hooks
            future.add_done_callback(lambda _: seen_in_callback.append(len(call_hook_threads)))
            assert future.result().status_code == 200
            seen_at_result = list(hook_threads)
        return threading.get_ident(), seen_at_result, seen_in_callback, len(call_hook_threads)

    caller, seen_at_result, seen_in_callback, call_hooks_run = await in_thread(work)
    assert len(seen_at_result) == 1
    assert seen_at_result[0] != caller
    assert hooks_on_a_loop == [False]  # nor on an event loop, which it would block
    assert call_hooks_run == 1
    assert seen_in_callback == [1]


async def test_a_hook_that_returns_a_response_replaces_it(serve: Serve) -> None:
    base = await start(serve, Service())

    def work() -> list[Response]:
        first: list[Response] = []

        def replace(response: Response) -> Response:
            first.append(response)
            return Response(
                status_code=299,
                headers={},
                content=b"replaced",
                url=response.url,
                request=response.request,
            )

        with microcall.FuturesClient(base, timeout=5.0) as client:
            future = client.request("GET", "/echo", hooks={"response": replace})
            return [future.result(), *first]

    replaced, original = await in_thread(work)
    assert original.status_code == 200
    assert (replaced.status_code, replaced.content) == (299, b"replaced")


async def test_with_stops_calls_not_yet_started(serve: Serve) -> None:
    service = Service(delay=0.2)
    base = await start(serve, service)
    submitted = 20

    def work() -> list[cf.Future[Response]]:
        with microcall.FuturesClient(base, timeout=5.0, max_in_flight=2) as client:
            futures = [client.get("/echo", params={"n": n}) for n in range(submitted)]
        with pytest.raises(microcall.UsageError):
            client.get("/echo")
        return futures

    futures = await in_thread(work)
    assert all(future.done() and not future.cancelled() for future in futures)
    finished = [future for future in futures if future.exception() is None]
    # The running ones finished normally; every one still queued was stopped.
    assert all(future.result().status_code == 200 for future in finished)
    assert 1 <= len(finished) <= 4
    assert len(service.numbers) == len(finished)
    stopped = [future.exception() for future in futures if future.exception() is not None]
    assert len(stopped) == submitted - len(finished)
    assert all(isinstance(error, microcall.ClientClosed) for error in stopped)


async def test_cancelling_a_queued_future_stops_its_call(serve: Serve) -> None:
    service = Service(delay=0.05)
    base = await start(serve, service)

    def work() -> tuple[list[cf.Future[Response]], bool, int]:
        with microcall.FuturesClient(base, timeout=5.0, max_in_flight=1) as client:
            futures = [client.get("/echo", params={"n": n}) for n in range(5)]
            cancelled = futures[3].cancel()
            completed = sum(1 for _ in cf.as_completed(futures, timeout=20.0))
        return futures, cancelled, completed

    futures, cancelled, completed = await in_thread(work)
    assert cancelled
    assert completed == 5  # as_completed still terminates, the cancelled one included
    assert futures[3].cancelled()
    assert [future.result().json()["n"] for i, future in enumerate(futures) if i != 3] == [
        0,
        1,
        2,
        4,
    ]
    assert sorted(service.numbers) == [0, 1, 2, 4]


async def test_cancelling_a_running_future_stops_the_call_on_the_server(serve: Serve) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response()

    app = web.Application()
    app.router.add_get("/slow", slow)
    base = await serve(app)
    client = microcall.FuturesClient(base, timeout=60.0)
    try:
        future = client.get("/slow")
        await asyncio.wait_for(started.wait(), timeout=5.0)
        assert future.cancel()
        await asyncio.wait_for(cancelled.wait(), timeout=5.0)
        assert future.cancelled()
    finally:
        await in_thread(client.close)


async def test_a_queued_call_keeps_the_deadline_it_was_given(serve: Serve) -> None:
    # One call at a time, 0.25 s each: the fourth leaves the queue after 0.75 s,
    # past the 0.6 s it was given when it was submitted.
    service = Service(delay=0.25)
    base = await start(serve, service)
    timeout = 0.6

    def work() -> tuple[float, BaseException | None]:
        with microcall.FuturesClient(base, timeout=5.0, max_in_flight=1) as client:
            began = time.monotonic()
            futures = [client.get("/echo", timeout=timeout) for _ in range(4)]
            cf.wait(futures, timeout=10.0)
            return time.monotonic() - began, futures[3].exception()

    elapsed, error = await in_thread(work)
    # Either it ended with DeadlineExceeded, or it answered within its time.
    assert isinstance(error, microcall.DeadlineExceeded) or elapsed <= timeout + 0.25


async def test_map_returns_results_in_order(serve: Serve, faults: FaultServer) -> None:
    service = Service()
    base = await start(serve, service)
    count = 10
    # Later calls answer sooner, so completion order is the reverse of the input order.
    urls = [f"{base}/echo?n={n}&delay={(count - n) * 0.01}" for n in range(count)]
    refused = faults.url(Fault.REFUSE) + "/"

    def work() -> tuple[list[Response | microcall.CallError], list[Response | microcall.CallError]]:
        with microcall.FuturesClient(timeout=5.0) as client:
            plain = client.map("GET", urls)
            mixed = client.map("GET", [*urls[:5], refused, *urls[5:]], return_exceptions=True)
            with pytest.raises(microcall.ConnectError):
                client.map("GET", [urls[0], refused])
        return plain, mixed

    plain, mixed = await in_thread(work)
    assert [result.json()["n"] for result in plain if isinstance(result, Response)] == list(
        range(count)
    )
    assert len(mixed) == count + 1
    assert isinstance(mixed[5], microcall.ConnectError)
    answers = [result for result in mixed if isinstance(result, Response)]
    assert [answer.json()["n"] for answer in answers] == list(range(count))


@pytest.mark.parametrize(
    ("front_door", "own"),
    [
        (microcall.AsyncClient, ()),
        (microcall.Client, ()),
        (microcall.FuturesClient, ("max_in_flight", "hooks", "hook_workers")),
    ],
)
def test_an_unknown_option_is_named_against_the_front_door_given_it(
    front_door: type[Any], own: tuple[str, ...]
) -> None:
    with pytest.raises(microcall.ConfigurationError) as refused:
        front_door("http://127.0.0.1:9", max_workers=8)
    message = str(refused.value)
    assert message.startswith(f"{front_door.__name__} got unknown option(s) max_workers")
    for name in own:
        assert name in message
