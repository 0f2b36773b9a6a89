"""How calls cross to the background loop and back: the inbox, the waiter, their ends.

Client and FuturesClient hand every call to one loop thread through an inbox
(one wake-up per burst) and blocking callers wait on a pipe of their thread's.
These tests hold the hand-off to what the front doors promise: every call of
a burst from many threads completes with its own result and its caller's
context, close() settles whatever is still queued, an interrupted caller's
late answer never reaches its next call, and a forked child never reads its
parent's answers. Everything runs over MockTransport or bare coroutines: no
network is needed to cross a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import contextvars
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import microcall
from microcall.client._handoff import Inbox, Waiter
from microcall.client._loop import BackgroundLoop
from microcall.errors import ClientClosed, UsageError
from microcall.testing import MockTransport, Reply

LOOPS = ("asyncio", "uvloop")
# A bound on waits that only a hang would reach.
PATIENCE = 15.0

caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    kind: str = request.param
    monkeypatch.setenv("MICROCALL_LOOP", kind)
    return kind


@pytest.fixture
def background(loop_kind: str) -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop("Client")
    yield loop
    loop.close()


async def whose(tag: str) -> tuple[str, str]:
    await asyncio.sleep(0)
    return caller.get(), tag


# ------------------------------------------------------------------ bursts


def test_a_burst_from_many_threads_completes_with_each_callers_result_and_context(
    background: BackgroundLoop,
) -> None:
    threads, calls = 16, 64
    start = threading.Barrier(threads)
    wrong: list[Any] = []

    def worker(n: int) -> None:
        caller.set(f"thread-{n}")
        start.wait()
        futures = [background.submit(whose(f"{n}/{i}")) for i in range(calls)]
        blocking = [background.run(whose(f"{n}/run{i}")) for i in range(8)]
        results = [future.result(timeout=PATIENCE) for future in futures] + blocking
        expected = [(f"thread-{n}", f"{n}/{i}") for i in range(calls)]
        expected += [(f"thread-{n}", f"{n}/run{i}") for i in range(8)]
        if results != expected:
            wrong.append((n, results))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(PATIENCE)
    assert not any(thread.is_alive() for thread in pool)
    assert wrong == []


def test_a_context_change_inside_the_call_stays_there(background: BackgroundLoop) -> None:
    async def change() -> str:
        caller.set("changed inside")
        return caller.get()

    token = caller.set("outside")
    try:
        assert background.run(change()) == "changed inside"
        assert caller.get() == "outside"
        assert background.run(whose("again")) == ("outside", "again")
    finally:
        caller.reset(token)


class CountingLoop(asyncio.SelectorEventLoop):
    """Counts the wake-ups asked of it from other threads."""

    wake_ups = 0

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self.wake_ups += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def begin_now(loop: asyncio.AbstractEventLoop, coro: Any, future: cf.Future[Any]) -> None:
    loop.create_task(coro).add_done_callback(lambda task: future.set_result(task.result()))


def test_sixty_four_submissions_in_a_burst_wake_the_loop_once() -> None:
    loop = CountingLoop()
    try:
        inbox = Inbox(loop, lambda: ClientClosed("closed"))
        futures: list[cf.Future[Any]] = [cf.Future() for _ in range(64)]
        for n, future in enumerate(futures):  # the loop is not running: all 64 wait
            assert inbox.put(begin_now, whose(str(n)), future)
        assert loop.wake_ups == 1
        loop.run_until_complete(asyncio.sleep(0.01))
        assert [future.result(timeout=0) for future in futures] == [
            ("nobody", str(n)) for n in range(64)
        ]
        # Drained: the next submission asks again.
        last: cf.Future[Any] = cf.Future()
        assert inbox.put(begin_now, whose("next"), last)
        assert loop.wake_ups == 2
        loop.run_until_complete(asyncio.sleep(0.01))
        assert last.result(timeout=0) == ("nobody", "next")
    finally:
        loop.close()


# ------------------------------------------------------------------ ends


def test_shutting_an_inbox_settles_every_queued_call_and_refuses_later_ones() -> None:
    loop = asyncio.new_event_loop()
    try:
        inbox = Inbox(loop, lambda: ClientClosed("closed before it started"))
        futures: list[cf.Future[Any]] = [cf.Future() for _ in range(5)]
        for n, future in enumerate(futures):
            inbox.put(begin_now, whose(str(n)), future)
        cancelled: cf.Future[Any] = cf.Future()
        inbox.put(begin_now, whose("cancelled"), cancelled)
        cancelled.cancel()
        waiter: Waiter[Any] = Waiter()
        inbox.put(begin_now, whose("waited"), waiter)
        inbox.shut()
        for future in futures:
            with pytest.raises(ClientClosed, match="before it started"):
                future.result(timeout=0)
        assert cancelled.cancelled()
        with pytest.raises(ClientClosed):
            waiter.wait()
        late = whose("late")
        assert not inbox.put(begin_now, late, cf.Future())
        late.close()
    finally:
        loop.close()


def test_close_settles_calls_still_queued_behind_a_busy_loop(loop_kind: str) -> None:
    background = BackgroundLoop("FuturesClient")
    release = threading.Event()

    async def hog() -> None:
        release.wait(PATIENCE)  # blocks the loop's thread: later calls stay queued

    background.submit(hog())
    queued = [background.submit(whose(str(n))) for n in range(32)]
    closer = threading.Thread(target=background.close)
    closer.start()
    time.sleep(0.05)  # let close() reach the loop (it cannot start before the hog ends)
    release.set()
    closer.join(PATIENCE)
    assert not closer.is_alive()
    for future in queued:  # each settled: run, stopped by the close, or refused
        assert future.done()
        with contextlib.suppress(ClientClosed):
            future.result(timeout=0)
    with pytest.raises(UsageError):
        background.submit(whose("after"))


def race_close(background: BackgroundLoop, callers: int) -> list[str]:
    outcomes: list[str] = []

    def call() -> None:
        try:
            background.run(whose("racing"))
            outcomes.append("answered")
        except (ClientClosed, UsageError):
            outcomes.append("refused")

    pool = [threading.Thread(target=call) for _ in range(callers)]
    for thread in pool:
        thread.start()
    background.close()
    for thread in pool:
        thread.join(PATIENCE)
    assert not any(thread.is_alive() for thread in pool)
    return outcomes


def test_a_call_racing_close_from_many_threads_never_hangs(loop_kind: str) -> None:
    for _ in range(5):
        background = BackgroundLoop("Client")
        background.run(whose("started"))
        assert len(race_close(background, 8)) == 8


# ------------------------------------------------------------------ interrupted callers


class Interrupted(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_an_interrupted_call_is_stopped_and_its_late_answer_never_reaches_the_next(
    loop_kind: str,
) -> None:
    def answer(request: microcall.Request) -> Reply:
        slow = request.url.path == "/slow"
        return Reply(200, content=request.url.path.encode(), delay=0.3 if slow else 0.0)

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    transport = MockTransport(answer)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with microcall.Client("http://service", transport=transport, timeout=5.0) as client:
            assert client.get("/first").content == b"/first"
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Interrupted):
                client.get("/slow")
            # The next calls on this thread get their own answers, not the slow one's.
            for n in range(5):
                assert client.get(f"/next{n}").content == f"/next{n}".encode()
            give_up = time.monotonic() + PATIENCE
            while transport.cancelled == 0 and time.monotonic() < give_up:
                time.sleep(0.01)
            assert transport.cancelled == 1  # the interrupted call was stopped
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------ fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_parent_and_child_each_get_their_own_answers(loop_kind: str) -> None:
    # The child inherits its thread's reply pipe: were it reused, the parent's
    # answers could be read by the child, and the other way round.
    def answer(request: microcall.Request) -> Reply:
        return Reply(200, content=str(os.getpid()).encode())

    with microcall.Client("http://service", transport=MockTransport(answer)) as client:
        assert client.get("/").content == str(os.getpid()).encode()
        pid = os.fork()
        if pid == 0:  # the child: whatever happens, never return into pytest
            code = 70
            try:
                mine = str(os.getpid()).encode()
                if all(client.get("/").content == mine for _ in range(200)):
                    code = 0
            finally:
                os._exit(code)
        mine = str(os.getpid()).encode()
        parent_ok = all(client.get("/").content == mine for _ in range(200))
        _, status = os.waitpid(pid, 0)
    assert parent_ok
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
