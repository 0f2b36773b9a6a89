"""The blocking runner: performs a call's decisions on the caller's thread.

Attempts run one after another in the caller's thread and context, with the
attempt's deadline set (``microcall.current_deadline()`` inside the
callable, inherited by the HTTP and gRPC calls it makes) and its trace
context current. Backoffs go through the injected ``sleep`` (``time.sleep``
by default; a test passes ``FakeClock.advance``).

What a thread cannot do. A running function cannot be interrupted from
outside, so an attempt runs to its end whatever its ``attempt_timeout`` or
the deadline say; they bound what it inherits (so the microcall calls inside
it end in time) and decide whether another attempt starts after it, nothing
more. A value returned late is still returned: the work is done, and
throwing it away would help nobody. Hedging needs attempts that run side
by side and can be cancelled, so :class:`~microcall.Resilience` refuses
``hedged()`` for blocking callables (threads could start a hedge, but never
stop the loser: a struggling database would get the extra load and keep it).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from microcall.context import reset_deadline, set_deadline
from microcall.errors import UsageError
from microcall.policy.strategy import Finish
from microcall.resilience._classify import Outcome, Raised, Returned
from microcall.resilience._driver import CallableCall, Shared, Start
from microcall.resilience._observe import enter_trace, exit_trace

_ASYNC_SLEEP = (
    "sleep= returns an awaitable, which a blocking call cannot wait on: "
    "give a blocking sleep (time.sleep, FakeClock.advance)"
)


def run_sync(
    shared: Shared,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call ``fn(*args, **kwargs)`` under ``shared``'s strategy, deadline and budget."""
    clock = shared.clock
    sleep = time.sleep if shared.sleep is None else shared.sleep
    if inspect.iscoroutinefunction(sleep):
        # Refused before the first attempt, not at the first backoff: a
        # backoff already over when it is reached never calls sleep at all.
        raise UsageError(_ASYNC_SLEEP)
    call = CallableCall(shared, name, clock.now())
    running: int | None = None
    try:
        while True:
            now = clock.now()
            action = call.next(now)
            if isinstance(action, Start):
                running = action.index
                outcome = _attempt(fn, args, kwargs, action)
                running = None
                call.finished(action.index, outcome, clock.now())
                continue
            if isinstance(action, Finish):
                break
            # Nothing runs between sequential attempts: this is a backoff.
            pause = sleep(max(0.0, (action.until or now) - now))
            if inspect.isawaitable(pause):
                if inspect.iscoroutine(pause):
                    pause.close()  # never awaited: close it, so Python does not warn
                raise UsageError(_ASYNC_SLEEP)
    except BaseException as stopped:  # KeyboardInterrupt, or a bug: observers hear the end
        if running is not None:
            call.abandon(running, clock.now())
        call.ended(stopped)
        raise
    return call.result(clock.now())


def _attempt(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], start: Start
) -> Outcome:
    token = set_deadline(start.deadline)
    trace = enter_trace(start.headers)
    try:
        return Returned(fn(*args, **kwargs))
    except Exception as error:
        return Raised(error)
    finally:
        exit_trace(trace)
        reset_deadline(token)
