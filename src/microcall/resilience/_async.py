"""The asyncio runner: performs a call's decisions with tasks, waits and cancellation.

Each attempt runs in a task of its own, so it can be timed out and
cancelled, and hedges can run side by side. The task's context is a copy of
the caller's with the attempt's deadline set (``microcall.current_deadline()``
inside the callable, inherited by the HTTP and gRPC calls it makes) and the
attempt's trace context current.

Waiting. Between sequential attempts (a backoff, nothing running) the runner
calls the injected ``sleep`` (``asyncio.sleep`` by default; a test passes
``FakeClock.advance``). While attempts run it waits on them with the event
loop's timer, bounded by the plan's next step and by every attempt's own
end (its ``attempt_timeout`` or the deadline), all computed on the injected
clock: with a FakeClock that stands still, the runner re-checks every time
the timer fires, and moves on when the test advances the clock.

Losers. When a hedge wins, the attempts still running are given the
strategy's ``linger`` to finish (a database driver may have to discard a
connection whose query is cancelled mid-way, as HTTP/1.1 must), then
cancelled. An attempt that outruns its own time or the deadline, or whose
call is itself cancelled, is cancelled at once. Either way the caller never
waits for a cancelled attempt to wind down: one that ignores cancellation
cannot hold its caller past the deadline.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from microcall.context import set_deadline
from microcall.policy.strategy import Finish, Hedged
from microcall.resilience._classify import Outcome, Raised, Returned
from microcall.resilience._driver import CallableCall, Shared, Sleep, Start
from microcall.resilience._observe import enter_trace


async def run_async(
    shared: Shared,
    name: str,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call ``fn(*args, **kwargs)`` under ``shared``'s strategy, deadline and budget."""
    clock = shared.clock
    sleep = asyncio.sleep if shared.sleep is None else shared.sleep
    lingering = shared.lingering
    call = CallableCall(shared, name, clock.now())
    loop = asyncio.get_running_loop()
    running: dict[asyncio.Task[Any], tuple[int, float]] = {}  # task -> (index, ends at)
    concluded = False
    try:
        while True:
            now = clock.now()
            action = call.next(now)
            if isinstance(action, Start):
                task = loop.create_task(_attempt(fn, args, kwargs, action))
                running[task] = (action.index, now + action.timeout)
                continue
            if isinstance(action, Finish):
                concluded = True
                break
            if not running:  # a backoff between sequential attempts
                await _sleep(sleep, 0.0 if action.until is None else action.until - now)
                continue
            until = min(ends for _, ends in running.values())
            if action.until is not None and action.until < until:
                until = action.until
            done, _ = await asyncio.wait(
                running, timeout=max(0.0, until - now), return_when=asyncio.FIRST_COMPLETED
            )
            now = clock.now()
            for task in done:
                index, _ = running.pop(task)
                call.finished(index, _outcome_of(task), now)
            for task, (index, ends) in list(running.items()):
                if ends <= now:
                    del running[task]
                    _stop(task, 0.0, lingering)
                    call.timed_out(index, now)
    except BaseException as stopped:  # cancelled, or a bug: everything stops at once
        now = clock.now()
        for task, (index, _) in running.items():
            call.abandon(index, now)
            _stop(task, 0.0, lingering)
        call.ended(stopped)
        raise
    now = clock.now()
    strategy = shared.strategy
    linger = strategy.linger if concluded and isinstance(strategy, Hedged) else 0.0
    for task, (index, _) in running.items():
        call.abandon(index, now)
        _stop(task, linger, lingering)
    return call.result(now)


async def _attempt(
    fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any], start: Start
) -> Any:
    # This task runs in its own copy of the caller's context: what is set
    # here is seen by the callable and whatever it calls, and by nothing else.
    set_deadline(start.deadline)
    enter_trace(start.headers)
    return await fn(*args, **kwargs)


async def _sleep(sleep: Sleep, seconds: float) -> None:
    pending = sleep(max(seconds, 0.0))
    if inspect.isawaitable(pending):
        await pending
    else:
        # A blocking sleep (a FakeClock's advance) returned at once: let other
        # tasks run, as a real sleep would.
        await asyncio.sleep(0)


def _outcome_of(task: asyncio.Task[Any]) -> Outcome:
    if task.cancelled():
        # Not cancelled by the runner (it forgets a task before cancelling it):
        # the callable raised CancelledError itself, which ends the call as itself.
        raise asyncio.CancelledError()
    error = task.exception()
    if error is None:
        return Returned(task.result())
    if isinstance(error, Exception):
        return Raised(error)
    raise error  # KeyboardInterrupt, SystemExit: never an outcome


def _stop(task: asyncio.Task[Any], linger: float, lingering: set[asyncio.Task[Any]]) -> None:
    """Cancel ``task`` now, or after ``linger`` seconds unless it finishes first."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it
        return
    timer = task.get_loop().call_later(linger, task.cancel) if linger > 0 else None
    if timer is None:
        task.cancel()
    # The loop keeps only weak references to tasks: this set keeps the loser
    # alive until it has ended.
    lingering.add(task)

    def settled(done: asyncio.Task[Any]) -> None:
        lingering.discard(done)
        if timer is not None:
            timer.cancel()
        if not done.cancelled():
            done.exception()  # retrieved, so asyncio does not log it

    task.add_done_callback(settled)
