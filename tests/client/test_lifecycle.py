"""The life of a Client and a FuturesClient: the loop they run on, fork, dropping, closing mid-call.

The servers run on the test's event loop; blocking client code runs in a
worker thread (``asyncio.to_thread``), as in test_front_doors.py. Whatever
must be seen at a process's exit (a crash, a warning on stderr) runs in a
subprocess, against the test's server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import json
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

import psutil
import pytest
import uvloop
from aiohttp import web

import microcall
from microcall import Response
from microcall.testing import MockTransport, Reply
from tests._observers import CallEnds
from tests.children import wait_for_child
from tests.conftest import Serve

T = TypeVar("T")

LOOPS = ("asyncio", "uvloop")
FRONT_DOORS = (microcall.Client, microcall.FuturesClient)

# Long enough that nothing in these tests ends by its deadline unless it hangs.
DEADLINE = 30.0
# A bound on waits that only a hang or a leak would reach.
PATIENCE = 15.0

PROCESS = psutil.Process()


class Service:
    """``/ok`` answers at once (or after ``?delay=``); ``/slow`` answers after a long sleep."""

    def __init__(self) -> None:
        self.arrived = 0
        self.slow_arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/ok", self.ok)
        self.app.router.add_get("/slow", self.slow)

    async def ok(self, request: web.Request) -> web.Response:
        self.arrived += 1
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text="ok")

    async def slow(self, request: web.Request) -> web.Response:
        self.arrived += 1
        self.slow_arrived.set()
        await asyncio.sleep(DEADLINE * 2)
        return web.Response(text="late")


async def in_thread(work: Callable[[], T]) -> T:
    """Run blocking client code off the test's loop, which must keep serving."""
    return await asyncio.to_thread(work)


def result_of(answer: Response | cf.Future[Response]) -> Response:
    return answer.result(timeout=PATIENCE) if isinstance(answer, cf.Future) else answer


def wait_until(condition: Callable[[], bool], *, within: float = PATIENCE) -> bool:
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once on each loop a Client can run on."""
    kind: str = request.param
    monkeypatch.setenv("MICROCALL_LOOP", kind)
    return kind


# ------------------------------------------------------------------ the loop


@pytest.mark.parametrize("front_door", FRONT_DOORS)
async def test_microcall_loop_picks_the_loop_a_client_runs_on(
    loop_kind: str, front_door: type[microcall.Client | microcall.FuturesClient]
) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    def answer(request: object) -> Reply:
        seen.append(asyncio.get_running_loop())
        return Reply(200)

    def work() -> None:
        with front_door("http://service", transport=MockTransport(answer)) as client:
            assert result_of(client.get("/x")).status_code == 200

    await in_thread(work)
    assert isinstance(seen[0], uvloop.Loop) == (loop_kind == "uvloop")


def test_an_unknown_microcall_loop_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MICROCALL_LOOP", "trio")
    with pytest.raises(microcall.ConfigurationError, match="MICROCALL_LOOP"):
        microcall.Client("http://service")


# ------------------------------------------------------------------ fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("child_calls", [True, False], ids=["child-calls", "child-idle"])
async def test_the_parent_keeps_working_after_a_fork(
    serve: Serve, loop_kind: str, child_calls: bool
) -> None:
    # Closing the child's copies of the parent's sockets would unregister them
    # from the epoll set both processes share: the parent's next call would
    # then hang until its deadline.
    service = Service()
    base = await serve(service.app)

    def work() -> int:
        with microcall.Client(base, timeout=DEADLINE) as client:
            assert client.get("/ok").status_code == 200
            pid = os.fork()
            if pid == 0:  # the child: whatever happens, never return into pytest
                code = 70
                try:
                    if child_calls:
                        assert client.get("/ok").status_code == 200
                    code = 0
                finally:
                    os._exit(code)
            status = wait_for_child(pid, within=PATIENCE)
            assert client.get("/ok").status_code == 200  # DeadlineExceeded if it hung
            return status

    status = await in_thread(work)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0


# The child exits normally (not with os._exit), so what Python and C run at
# exit runs: a crash or a warning there shows in its status or on stderr.
FORK_AND_EXIT = """
import json, os, sys
import microcall

base, front_door, child_calls = sys.argv[1], sys.argv[2], sys.argv[3] == "calls"
make = getattr(microcall, front_door)

def call(client):
    answer = client.get("/ok")
    return answer if isinstance(answer, microcall.Response) else answer.result()

client = make(base, timeout=30.0)
call(client)
pid = os.fork()
if pid == 0:
    if child_calls:
        call(client)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print(json.dumps({
    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
    "parent": call(client).status_code,
}))
"""


async def run_python(script: str, *args: str, loop_kind: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "MICROCALL_LOOP": loop_kind},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60.0)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("front_door", ["Client", "FuturesClient"])
@pytest.mark.parametrize("child_does", ["nothing", "calls"])
async def test_a_forked_child_exits_cleanly(
    serve: Serve, loop_kind: str, front_door: str, child_does: str
) -> None:
    # On uvloop a child that never used its client crashed at exit (libuv
    # joined the parent's pool threads), and children printed "Unclosed
    # client session" for the parent's pool.
    base = await serve(Service().app)
    returncode, out, err = await run_python(
        FORK_AND_EXIT, base, front_door, child_does, loop_kind=loop_kind
    )
    assert err == ""
    assert returncode == 0
    assert json.loads(out) == {"signal": None, "code": 0, "parent": 200}


# ------------------------------------------------------------------ dropped clients


def threads_and_fds() -> tuple[int, int]:
    return PROCESS.num_threads(), PROCESS.num_fds()


async def test_dropped_clients_release_their_threads_and_sockets(
    serve: Serve, loop_kind: str
) -> None:
    base = await serve(Service().app)

    def one(front_door: type[microcall.Client | microcall.FuturesClient]) -> None:
        client = front_door(base, timeout=DEADLINE)
        assert result_of(client.get("/ok")).status_code == 200

    def work() -> tuple[tuple[int, int], tuple[int, int]]:
        for front_door in FRONT_DOORS:  # warm-up: what the first call makes once
            with front_door(base, timeout=DEADLINE) as client:
                result_of(client.get("/ok"))
        threads, fds = threads_and_fds()
        for n in range(50):
            one(FRONT_DOORS[n % 2])
        gc.collect()
        # The server's side of each connection closes when the test's loop
        # sees the client's FIN: polling from this thread leaves it free to.
        wait_until(lambda: threads_and_fds()[0] <= threads and threads_and_fds()[1] <= fds)
        return (threads, fds), threads_and_fds()

    baseline, after = await in_thread(work)
    assert after[0] <= baseline[0], f"threads: {baseline[0]} before, {after[0]} after"
    assert after[1] <= baseline[1], f"descriptors: {baseline[1]} before, {after[1]} after"


async def test_a_client_dropped_on_its_own_loop_thread_is_released(serve: Serve) -> None:
    # The last reference goes in a future's done-callback, which runs on the
    # client's loop thread: the finalizer runs there, and must not wait for
    # that thread.
    base = await serve(Service().app)

    def work() -> bool:
        released = threading.Event()
        holder = [microcall.FuturesClient(base, timeout=DEADLINE)]
        weakref.finalize(holder[0], released.set)
        threads = set(threading.enumerate())
        future = holder[0].get("/ok")
        future.add_done_callback(lambda _: holder.clear())
        assert future.result(timeout=PATIENCE).status_code == 200
        assert released.wait(PATIENCE)
        # Its loop thread ends by itself.
        return wait_until(lambda: set(threading.enumerate()) <= threads)

    assert await in_thread(work)


async def test_a_client_collected_inside_another_clients_call_is_released(serve: Serve) -> None:
    base = await serve(Service().app)

    def work() -> tuple[bool, int, bool]:
        collected = threading.Event()
        threads = set(threading.enumerate())
        gc.disable()  # so that only the collection below, mid-call, frees it
        try:
            doomed = microcall.Client(base, timeout=DEADLINE)
            assert doomed.get("/ok").status_code == 200
            doomed.itself = doomed  # type: ignore[attr-defined]  # a cycle: refcounts never free it
            weakref.finalize(doomed, collected.set)
            del doomed

            def collect_then_answer(request: object) -> Reply:
                gc.collect()  # on the other client's loop thread, in the middle of its call
                return Reply(200)

            with microcall.Client(
                "http://service", transport=MockTransport(collect_then_answer)
            ) as other:
                status = other.get("/x").status_code
        finally:
            gc.enable()
        # Both loop threads end: the closed client's, and the collected one's by itself.
        return collected.is_set(), status, wait_until(lambda: set(threading.enumerate()) <= threads)

    assert await in_thread(work) == (True, 200, True)


# Clients dropped unclosed, one in a cycle, one left open: nothing on stderr at exit.
DROP_AND_EXIT = """
import sys
import microcall

base = sys.argv[1]
for make in (microcall.Client, microcall.FuturesClient):
    client = make(base)
    answer = client.get("/ok")
    if not isinstance(answer, microcall.Response):
        answer.result()
    del client
cyclic = microcall.Client(base)
cyclic.get("/ok")
cyclic.itself = cyclic
del cyclic
kept = microcall.FuturesClient(base)
kept.get("/ok").result()
print("done")
"""


async def test_dropped_and_unclosed_clients_exit_quietly(serve: Serve, loop_kind: str) -> None:
    base = await serve(Service().app)
    returncode, out, err = await run_python(DROP_AND_EXIT, base, loop_kind=loop_kind)
    assert (returncode, out, err) == (0, "done\n", "")


# ------------------------------------------------------------------ close() mid-call


STRATEGIES: dict[str, microcall.Strategy] = {
    "single": microcall.single(),
    "retry": microcall.retry(3),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_closing_a_client_mid_call_raises_client_closed_in_the_caller(
    serve: Serve, loop_kind: str, strategy: str
) -> None:
    service = Service()
    base = await serve(service.app)

    def work() -> tuple[BaseException | None, float]:
        client = microcall.Client(base, timeout=DEADLINE, strategy=STRATEGIES[strategy])
        outcome: list[BaseException] = []

        def caller() -> None:
            try:
                client.get("/slow")
            except BaseException as error:  # whatever it is, the test looks at it
                outcome.append(error)

        thread = threading.Thread(target=caller)
        thread.start()
        assert wait_until(lambda: service.arrived == 1)
        started = time.monotonic()
        client.close()
        thread.join(PATIENCE)
        took = time.monotonic() - started
        with pytest.raises(microcall.UsageError, match="this Client is closed"):
            client.get("/ok")
        return (outcome[0] if outcome else None), took

    error, took = await in_thread(work)
    assert isinstance(error, microcall.ClientClosed), repr(error)
    assert "closed while GET" in str(error)
    assert error.request is not None
    assert error.request.url.path == "/slow"
    assert took < DEADLINE / 2  # stopped, not waited for


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_closing_a_futures_client_stops_queued_calls_with_client_closed(
    serve: Serve, strategy: str
) -> None:
    service = Service()
    base = await serve(service.app)

    def work() -> list[cf.Future[Response]]:
        client = microcall.FuturesClient(
            base, timeout=DEADLINE, strategy=STRATEGIES[strategy], max_in_flight=1
        )
        running = client.get("/ok", params={"delay": "0.3"})
        queued = [client.get("/ok") for _ in range(3)]
        assert wait_until(lambda: service.arrived == 1)
        client.close()  # waits for the running call, stops the queued ones
        with pytest.raises(microcall.UsageError, match="this FuturesClient is closed"):
            client.get("/ok")
        return [running, *queued]

    running, *queued = await in_thread(work)
    assert running.result().status_code == 200
    for future in queued:
        assert not future.cancelled()
        error = future.exception()
        assert isinstance(error, microcall.ClientClosed), repr(error)
        assert "before GET" in str(error)
    assert service.arrived == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_aclose_mid_call_raises_client_closed_and_leaves_the_task_uncancelled(
    serve: Serve, strategy: str
) -> None:
    service = Service()
    base = await serve(service.app)
    heard = CallEnds()
    client = microcall.AsyncClient(
        base, timeout=DEADLINE, strategy=STRATEGIES[strategy], observers=[heard]
    )

    async def caller() -> tuple[BaseException, int]:
        try:
            await client.get("/slow")
        except microcall.ClientClosed as error:
            task = asyncio.current_task()
            assert task is not None
            await asyncio.sleep(0)  # carries on: no cancellation left over
            return error, task.cancelling()
        raise AssertionError("the call was not stopped")

    task = asyncio.create_task(caller())
    await asyncio.wait_for(service.slow_arrived.wait(), timeout=PATIENCE)
    await asyncio.wait_for(client.aclose(), timeout=PATIENCE)
    error, cancelling = await asyncio.wait_for(task, timeout=PATIENCE)
    assert cancelling == 0
    assert isinstance(error, microcall.ClientClosed)
    assert error.request is not None
    assert error.request.url.path == "/slow"
    # Its observers hear what the caller got, not the cancellation that stopped it.
    assert [type(ended).__name__ for ended in heard.errors] == ["ClientClosed"]
    with pytest.raises(microcall.UsageError, match="closed"):
        await client.get("/ok")


async def test_a_call_cancelled_by_its_caller_as_aclose_stops_it_stays_cancelled(
    serve: Serve,
) -> None:
    service = Service()
    base = await serve(service.app)
    client = microcall.AsyncClient(base, timeout=DEADLINE)
    task = asyncio.create_task(client.get("/slow"))
    await asyncio.wait_for(service.slow_arrived.wait(), timeout=PATIENCE)
    closing = asyncio.create_task(client.aclose())
    await asyncio.sleep(0)  # aclose() has cancelled the call
    task.cancel()  # and so does its caller
    await asyncio.wait_for(closing, timeout=PATIENCE)
    with pytest.raises(asyncio.CancelledError):
        await task
