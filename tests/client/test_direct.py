"""A Client's direct calls: plain calls run in the calling thread, on blocking sockets.

Which calls are direct and which go to the loop; that a direct call is the
same call as on the loop (records, errors, headers sent downstream,
observers, redirects, TLS); that it ends within its deadline whatever the
server does; that sockets are bounded, reused, and let go of; and that
closing the client mid-call stops it with ClientClosed. The whole fault
matrix runs through the direct path as well (tests/faults/test_matrix.py,
``test_the_whole_matrix_through_the_blocking_client``).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psutil
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

import microcall
from microcall.observe.prometheus import ClientMetrics
from microcall.transports._h1_direct import DIRECT_BODY_MAX
from tests.children import wait_for_child
from tests.conftest import Serve
from tests.faultserver import Behaviour, Fault, fault_server
from tests.transports.test_httpx import EchoApp, TLSServe
from tests.transports.test_httpx import ca as ca  # the `ca` fixture
from tests.transports.test_httpx import tls_serve as tls_serve  # the `tls_serve` fixture
from tests.transports.test_httpx import trusting as trusting  # the `trusting` fixture

T = TypeVar("T")

# A bound on waits that only a hang would reach.
PATIENCE = 15.0
# Scheduling slack a loaded machine may add to a deadline.
MARGIN = 1.0


async def in_thread(work: Callable[[], T]) -> T:
    """Run blocking client code off the test's loop, which must keep serving."""
    return await asyncio.to_thread(work)


class Service:
    """Echoes what it was sent; counts connections by client port; can wait, redirect, gzip."""

    def __init__(self) -> None:
        self.ports: set[int] = set()
        self.open_now = 0
        self.most_open = 0
        self.app = web.Application()
        self.app.router.add_route("*", "/echo", self.echo)
        self.app.router.add_get("/wait", self.wait)
        self.app.router.add_route("*", "/see-other", self.see_other)
        self.app.router.add_get("/gzip", self.gzipped)
        self.app.router.add_get("/flaky", self.flaky)
        self.failures_left = 0

    def _note(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.ports.add(peer[1])

    async def echo(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.json_response(
            {
                "method": request.method,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": (await request.read()).decode(),
            }
        )

    async def wait(self, request: web.Request) -> web.Response:
        self._note(request)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await asyncio.sleep(float(request.query.get("s", "0.05")))
        finally:
            self.open_now -= 1
        return web.Response(text="waited")

    async def flaky(self, request: web.Request) -> web.Response:
        """503 while ``failures_left`` lasts, then 200."""
        self._note(request)
        if self.failures_left:
            self.failures_left -= 1
            return web.Response(status=503, text="busy")
        return web.Response(text="fine")

    async def see_other(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/echo?after=redirect")

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b"squeezed" * 100), headers={"Content-Encoding": "gzip"}
        )


@pytest.fixture(name="service")
def service_fixture() -> Service:
    return Service()


def loop_started(client: microcall.Client) -> bool:
    return client._loop.started


# ------------------------------------------------------------------ which calls are direct


async def test_plain_calls_run_in_the_calling_thread_and_never_start_the_loop(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)

    def work() -> list[Any]:
        with microcall.Client(base, timeout=5.0) as client:
            got = client.get("/echo", params={"q": "1"}, headers={"X-Mine": "yes"}).json()
            posted = client.post("/echo", json={"a": 1}).json()
            put = client.put("/echo", content=b"raw", timeout=2.0).json()
            return [got, posted, put, loop_started(client)]

    got, posted, put, started = await in_thread(work)
    assert got["query"] == {"q": "1"}
    assert got["headers"]["X-Mine"] == "yes"
    assert posted["method"] == "POST"
    assert posted["body"] == '{"a":1}'
    assert put["body"] == "raw"
    assert started is False
    assert len(service.ports) == 1  # one kept-alive socket for all three


@pytest.mark.parametrize(
    ("options", "call"),
    [
        ({"strategy": microcall.hedged(0.05)}, {}),
        ({}, {"strategy": microcall.hedged(0.05)}),
        ({"replicas": 2}, {}),
        ({"breaker": microcall.CircuitBreakerConfig()}, {}),
        ({"cookies": True}, {}),
        ({"auth": ("user", "secret")}, {}),
        ({}, {"cookies": {"k": "v"}}),
        ({}, {"content": iter([b"read", b"once"])}),
        ({}, {"content": b"x" * (DIRECT_BODY_MAX + 1)}),
        ({"observers": ["not thread-safe"]}, {}),
    ],
    ids=[
        "client-hedges",
        "call-hedges",
        "replicas",
        "breaker",
        "cookie-jar",
        "auth",
        "call-cookies",
        "streamed-body",
        "large-body",
        "observer-not-thread-safe",
    ],
)
async def test_calls_that_need_the_loop_go_to_it_and_answer_alike(
    serve: Serve, service: Service, options: dict[str, Any], call: dict[str, Any]
) -> None:
    base: str | list[str] = await serve(service.app)
    if options.get("observers"):
        options = {**options, "observers": [_Recorder()]}
    if options.pop("replicas", None):
        base = [str(base), await serve(service.app)]

    def work() -> tuple[int, bool]:
        with microcall.Client(base, timeout=5.0, **options) as client:
            # PUT: retried and hedged, unlike a POST, which makes one attempt whatever the strategy
            response = client.put("/echo", **call)
            return response.status_code, loop_started(client)

    assert await in_thread(work) == (200, True)


class _Recorder:
    """An observer that does not say it may be called from any thread."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def call_started(self, request: Any) -> None:
        self.threads.add(threading.get_ident())


class _ThreadSafeRecorder(_Recorder):
    thread_safe = True


async def test_a_thread_safe_observer_is_called_in_the_calling_thread(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)
    safe, unsafe = _ThreadSafeRecorder(), _Recorder()

    def work() -> int:
        with microcall.Client(base, observers=[safe]) as client:
            client.get("/echo")
        with microcall.Client(base, observers=[unsafe]) as client:
            client.get("/echo")
        return threading.get_ident()

    caller = await in_thread(work)
    assert safe.threads == {caller}
    assert unsafe.threads
    assert caller not in unsafe.threads


# ------------------------------------------------------------------ the same call


async def test_a_direct_call_carries_its_callers_deadline_priority_and_records(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)

    def work() -> microcall.Response:
        with (
            microcall.Client(base, timeout=30.0) as client,
            microcall.deadline(2.0),
            microcall.priority("high"),
        ):
            return client.get("/echo")

    response = await in_thread(work)
    sent = response.json()["headers"]
    assert 0 < float(sent["X-Request-Timeout"]) <= 2.0
    assert sent["X-Request-Priority"] == "high"
    [attempt] = response.attempts
    assert attempt.kind is microcall.AttemptKind.FIRST
    assert attempt.status == 200
    assert 0 < response.elapsed < PATIENCE


async def test_metrics_count_direct_calls(serve: Serve, service: Service) -> None:
    base = await serve(service.app)
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)

    def work() -> bool:
        with microcall.Client(base, observers=[metrics]) as client:
            threads = [threading.Thread(target=client.get, args=("/echo",)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(PATIENCE)
            return loop_started(client)

    assert await in_thread(work) is False
    count = registry.get_sample_value(
        "microcall_client_attempts_total",
        {
            "http_request_method": "GET",
            "server_address": "127.0.0.1",
            "server_port": base.rsplit(":", 1)[1],
            "attempt_kind": "first",
        },
    )
    assert count == 8


async def test_redirects_and_compressed_bodies_as_on_the_loop(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)

    def work() -> tuple[microcall.Response, microcall.Response, bool]:
        with microcall.Client(base) as client:
            redirected = client.post("/see-other", json={"x": 1})
            squeezed = client.get("/gzip")
            return redirected, squeezed, loop_started(client)

    redirected, squeezed, started = await in_thread(work)
    assert redirected.json()["method"] == "GET"  # a 303 turns a POST into a GET
    assert redirected.json()["query"] == {"after": "redirect"}
    assert str(redirected.url).endswith("/echo?after=redirect")
    assert squeezed.content == b"squeezed" * 100
    assert started is False


async def test_tls_direct_calls_verify_and_keep_their_connection(
    tls_serve: TLSServe, trusting: ssl.SSLContext
) -> None:
    base = await tls_serve(EchoApp())

    def work() -> tuple[Any, Any, bool]:
        with microcall.Client(base, verify=trusting, timeout=5.0) as client:
            first = client.get("/echo").json()
            second = client.get("/echo").json()
            started = loop_started(client)
        with (
            microcall.Client(base, timeout=5.0) as untrusting,  # the system's CAs
            pytest.raises(microcall.ConnectError, match="certificate"),
        ):
            untrusting.get("/echo")
        return first, second, started

    first, second, started = await in_thread(work)
    assert first["client_port"] == second["client_port"]
    assert started is False


async def test_a_name_is_looked_up_within_the_deadline(serve: Serve, service: Service) -> None:
    base = await serve(service.app)
    by_name = base.replace("127.0.0.1", "localhost")

    def work() -> int:
        with microcall.Client(by_name, timeout=5.0) as client:
            return client.get("/echo").status_code

    assert await in_thread(work) == 200


# ------------------------------------------------------------------ retries


QUICK = microcall.retry(3, backoff=microcall.Backoff(base=0.01, cap=0.02))


async def test_retries_run_in_the_calling_thread_with_their_records_and_budget(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)
    service.failures_left = 2

    budget = microcall.RetryBudget()

    def work() -> tuple[microcall.Response, bool]:
        with microcall.Client(base, strategy=QUICK, timeout=5.0, budget=budget) as client:
            return client.get("/flaky"), loop_started(client)

    response, started = await in_thread(work)
    assert response.status_code == 200
    assert [attempt.kind for attempt in response.attempts] == [
        microcall.AttemptKind.FIRST,
        microcall.AttemptKind.RETRY,
        microcall.AttemptKind.RETRY,
    ]
    assert [attempt.status for attempt in response.attempts] == [503, 503, 200]
    assert (budget.deposited, budget.withdrawn) == (1, 2)
    assert started is False


async def test_an_attempt_timeout_ends_each_stall_and_the_deadline_ends_the_call() -> None:
    strategy = microcall.retry(3, attempt_timeout=0.1, backoff=microcall.Backoff(base=0.01))
    async with fault_server() as faults:
        url = faults.url(Behaviour.STALL_HEADERS)

        def work() -> tuple[BaseException, bool]:
            with microcall.Client(timeout=3.0) as client:
                with pytest.raises(TimeoutError) as caught:
                    client.get(url, strategy=strategy)
                return caught.value, loop_started(client)

        error, started = await in_thread(work)
        assert isinstance(error, microcall.AttemptTimeout | microcall.DeadlineExceeded)
        assert isinstance(error, microcall.CallError)
        attempts = error.attempts
        assert len(attempts) == 3
        assert all(attempt.error == "AttemptTimeout" for attempt in attempts)
        assert all(attempt.duration <= 0.1 + MARGIN for attempt in attempts)
        assert started is False
        assert await _wait_until(lambda: faults.open_connections == 0)
    assert faults.accepted[Behaviour.STALL_HEADERS] == 3


async def test_closing_during_a_backoff_stops_the_retries_with_client_closed(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)
    service.failures_left = 100
    slow_backoff = microcall.retry(20, backoff=microcall.Backoff(base=0.5, multiplier=1.0, cap=0.5))

    client = microcall.Client(base, strategy=slow_backoff, timeout=PATIENCE, budget=None)
    error, took = await in_thread(
        lambda: _close_mid_call(
            client, lambda: client.get("/flaky"), lambda: service.failures_left <= 98
        )
    )
    assert isinstance(error, microcall.ClientClosed), repr(error)
    assert error.attempts  # the attempts made before the close
    assert took < 0.5 + MARGIN  # the backoff in progress, not the twenty retries


def test_a_lookup_that_hangs_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver, not the network, is what hangs here: getaddrinfo cannot be
    # interrupted, and a call must still end when its time is up.
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hangs.invalid":
            release.wait(PATIENCE)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        with microcall.Client(timeout=0.2) as client:
            started = time.monotonic()
            with pytest.raises(microcall.DeadlineExceeded):
                client.get("http://hangs.invalid:8080/")
            assert time.monotonic() - started < 0.2 + MARGIN
    finally:
        release.set()


# ------------------------------------------------------------------ faults and limits


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.HANG, microcall.DeadlineExceeded),
        (Fault.TRICKLE, microcall.DeadlineExceeded),
        (Fault.RESET, microcall.ReadError),
        (Fault.GARBAGE, microcall.ProtocolError),
        (Fault.REFUSE, microcall.ConnectError),
    ],
    ids=str,
)
async def test_each_fault_ends_typed_within_the_deadline(
    fault: Fault, error: type[microcall.CallError]
) -> None:
    deadline = 0.3
    async with fault_server() as faults:
        url = faults.url(fault)

        def work() -> tuple[BaseException, float, bool]:
            with microcall.Client(timeout=deadline) as client:
                started = time.monotonic()
                with pytest.raises(microcall.CallError) as caught:
                    client.post(url, json={"once": True})
                return caught.value, time.monotonic() - started, loop_started(client)

        raised, took, started = await in_thread(work)
        assert isinstance(raised, error), repr(raised)
        assert took < deadline + MARGIN
        assert len(raised.attempts) == 1
        assert started is False
        assert await _wait_until(lambda: faults.open_connections == 0)


async def test_a_server_closing_idle_connections_fails_no_call_not_even_a_post() -> None:
    async with fault_server() as faults:
        url = faults.url(Behaviour.CLOSE_AFTER_ANSWER)

        def work() -> list[str]:
            failures = []
            with microcall.Client(timeout=5.0) as client:
                for index in range(60):
                    path = f"/call/{index}"
                    try:
                        answer = client.post(url + path) if index % 2 else client.get(url + path)
                    except microcall.CallError as error:
                        failures.append(repr(error))
                    else:
                        assert answer.content == path.encode()
                    time.sleep(0.01)  # the server's close has arrived by the next call
            return failures

        assert await in_thread(work) == []


async def test_max_connections_bounds_the_direct_sockets_of_many_threads(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)

    def work() -> list[int]:
        limits = microcall.Limits(max_connections=2)
        with microcall.Client(base, limits=limits, timeout=PATIENCE) as client:
            statuses: list[int] = []

            def call() -> None:
                statuses.append(client.get("/wait", params={"s": "0.05"}).status_code)

            threads = [threading.Thread(target=call) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(PATIENCE)
            return statuses

    assert await in_thread(work) == [200] * 8
    assert service.most_open <= 2
    assert len(service.ports) <= 2


async def test_a_host_at_its_own_limit_does_not_hold_up_another(serve: Serve) -> None:
    busy, other = Service(), Service()
    busy_base, other_base = await serve(busy.app), await serve(other.app)

    def work() -> float:
        limits = microcall.Limits(max_connections=4, max_connections_per_host=1)
        with microcall.Client(limits=limits, timeout=PATIENCE) as client:
            holders = [
                threading.Thread(
                    target=client.get, args=(busy_base + "/wait",), kwargs={"params": {"s": "3"}}
                )
                for _ in range(2)
            ]
            for holder in holders:
                holder.start()
            assert _wait_until_sync(lambda: busy.open_now == 1)
            started = time.monotonic()
            assert client.get(other_base + "/echo").status_code == 200
            took = time.monotonic() - started
            for holder in holders:
                holder.join(PATIENCE)
            return took

    took = await in_thread(work)
    assert took < 2.0  # not behind the busy host's second caller, who waits 3 s for a socket
    assert busy.most_open == 1


async def test_waiting_for_a_free_socket_ends_at_the_deadline(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)

    def work() -> BaseException:
        limits = microcall.Limits(max_connections=1)
        with microcall.Client(base, limits=limits, timeout=PATIENCE) as client:
            holder = threading.Thread(
                target=client.get, args=("/wait",), kwargs={"params": {"s": "1"}}
            )
            holder.start()
            assert _wait_until_sync(lambda: service.open_now == 1)
            with pytest.raises(microcall.DeadlineExceeded) as caught:
                client.get("/echo", timeout=0.2)
            holder.join(PATIENCE)
            return caught.value

    raised = await in_thread(work)
    assert raised.attempts[0].error == "DeadlineExceeded"
    assert raised.attempts[0].duration < 0.2 + MARGIN


async def test_closing_mid_call_wakes_the_caller_with_client_closed(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)

    client = microcall.Client(base, timeout=PATIENCE)
    error, took = await in_thread(
        lambda: _close_mid_call(
            client,
            lambda: client.get("/wait", params={"s": "30"}),
            lambda: service.open_now == 1,
        )
    )
    assert isinstance(error, microcall.ClientClosed), repr(error)
    assert took < PATIENCE / 2


async def test_a_dropped_client_lets_go_of_its_direct_sockets(
    serve: Serve, service: Service
) -> None:
    base = await serve(service.app)
    process = psutil.Process()

    def work() -> int:
        before = process.num_fds()
        client = microcall.Client(base)
        client.get("/echo")
        del client
        return before

    before = await in_thread(work)
    assert await _wait_until(lambda: process.num_fds() <= before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
async def test_a_forked_child_calls_on_sockets_of_its_own(serve: Serve, service: Service) -> None:
    base = await serve(service.app)

    def work() -> tuple[int, int]:
        with microcall.Client(base, timeout=5.0) as client:
            client.get("/echo")
            pid = os.fork()
            if pid == 0:  # the child: its own socket, then out without cleanup of the parent's
                code = 0 if client.get("/echo").status_code == 200 else 1
                os._exit(code)
            status = wait_for_child(pid, within=PATIENCE)
            return status, client.get("/echo").status_code

    status, after = await in_thread(work)
    assert status == 0
    assert after == 200
    assert len(service.ports) == 2  # the parent's kept socket, and the child's


def _close_mid_call(
    client: microcall.Client, call: Callable[[], object], started: Callable[[], bool]
) -> tuple[BaseException, float]:
    """Close ``client`` once ``call``, made in another thread, has ``started``: its outcome, and
    how long after the close it came."""
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            call()
        except BaseException as error:  # whatever it is, the test looks at it
            outcome.append(error)

    thread = threading.Thread(target=caller)
    thread.start()
    assert _wait_until_sync(started)
    closed = time.monotonic()
    client.close()
    thread.join(PATIENCE)
    return outcome[0], time.monotonic() - closed


async def _wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _wait_until_sync(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
