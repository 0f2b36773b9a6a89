"""The engine's calls run in the calling thread, over a blocking send: a Client's direct calls.

The engine (:mod:`microcall._engine`) runs a call as asyncio tasks on an
event loop. A call that needs no concurrency (attempts one after another,
never side by side) can run where it is made instead, if the transport can
send one attempt without a loop (``transports/_h1_direct``). Two such calls:

- one attempt to one endpoint: the engine's straight path, the same steps
  as ``Engine._single`` with the send blocking and no admission slot (the
  caller's thread is the call's; the transport's pool bounds its sockets);
- retries: the call driver (:mod:`microcall._driver`) as the engine runs
  it, but each attempt sent in this thread and each backoff slept here.
  Only for a client with one endpoint and nothing to decide between
  (``Replicas.single``): the driver then sends every attempt to the
  call's own target, as it does for an absolute URL, and touches nothing
  of the client's endpoint group, which only its loop keeps.

What the calls share with the loop's is thread-safe: the retry budget takes
a lock, the strategy's random numbers come from one ``random.Random``, and
the observers all said ``thread_safe``. Hedges need attempts side by side
and cancellation, and stay on the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from yarl import URL

from microcall._attempt import AttemptKind
from microcall._call_watch import CallWatch, Watch
from microcall._driver import Start, start_call
from microcall._engine import Engine, _deadline_exceeded
from microcall._request import Request
from microcall._response import Response
from microcall._wire import attempt_headers
from microcall.errors import AttemptTimeout, CallError, ClientClosed
from microcall.observe.hooks import AttemptScope
from microcall.policy.strategy import Finish, Retry, SingleAttempt, Strategy

DirectSend = Callable[[Request, URL, dict[str, str], float], Response]
"""A blocking attempt: (request, url, headers, seconds) to its Response, or a CallError."""


def takes_direct(engine: Engine, request: Request, strategy: Strategy) -> bool:
    """Whether :func:`call_direct` may run this call (see the module)."""
    if not engine.observers_anywhere:
        return False
    replicas = engine.replicas
    if not (replicas is None or request.path is None or replicas.single):
        return False
    kind = type(strategy)
    return kind is SingleAttempt or kind is Retry or not request.replayable


def call_direct(
    engine: Engine,
    request: Request,
    expires_at: float,
    priority: str | None,
    strategy: Strategy,
    send: DirectSend,
) -> Response:
    """Run a call :func:`takes_direct` allowed, in this thread; its Response, or its CallError."""
    watching = engine.watching
    watch = watching.call(request) if watching is not None else None
    start = engine._started(request, expires_at, watch)
    if type(strategy) is not SingleAttempt and request.replayable:
        return _retried(engine, request, start, expires_at, priority, strategy, send, watch)
    remaining = expires_at - start
    headers = attempt_headers(request.headers, remaining, priority)
    scopes = (
        watch.attempt_started(0, AttemptKind.FIRST, request.url, headers)
        if type(watch) is Watch and watch.following
        else None
    )
    try:
        response = send(request, request.url, headers, remaining)
    except CallError as error:
        error = engine._single_failed(request, start, start, error, watch, scopes)
        raise error
    except BaseException as stopped:  # a KeyboardInterrupt, or a bug
        engine._single_stopped(request, start, start, stopped, watch, scopes)
        raise
    return engine._single_answered(request, start, start, response, watch, scopes)


def _retried(
    engine: Engine,
    request: Request,
    start: float,
    expires_at: float,
    priority: str | None,
    strategy: Strategy,
    send: DirectSend,
    watch: CallWatch | None,
) -> Response:
    """The driver's decisions performed one attempt at a time (``Engine._planned`` without tasks)."""
    now = engine._now
    driver = start_call(
        engine._policies,
        engine._rules,
        strategy,
        replayable=True,
        route=request.route,
        start=start,
        expires_at=expires_at,
        group=None,
        target=request.endpoint,
    )
    running: int | None = None
    running_scopes: list[AttemptScope] | None = None
    try:
        while True:
            moment = now()
            action = driver.next(moment)
            if isinstance(action, Start):
                headers = attempt_headers(request.headers, action.timeout, priority)
                scopes = (
                    watch.attempt_started(action.index, action.kind, request.url, headers)
                    if type(watch) is Watch and watch.following
                    else None
                )
                running, running_scopes = action.index, scopes
                try:
                    outcome: Response | CallError = send(
                        request, request.url, headers, action.timeout
                    )
                except ClientClosed:
                    raise  # no other attempt will go
                except AttemptTimeout as timeout:
                    outcome = (
                        _deadline_exceeded(request, request.url, timeout)
                        if action.by_deadline
                        else timeout
                    )
                except CallError as error:
                    outcome = error
                running = None
                record = driver.finished(action.index, outcome, now())
                if scopes:
                    Watch.attempt_ended(scopes, record)
                continue
            if isinstance(action, Finish):
                break
            # Nothing runs between attempts one after another: a backoff.
            time.sleep(max(0.0, (action.until or moment) - moment))
        response = engine._result(request, driver, start, expires_at)
    except BaseException as error:  # the call's CallError, closed, or a KeyboardInterrupt
        if running is not None:
            record = driver.lost(running, now())
            if running_scopes:
                Watch.attempt_ended(running_scopes, record)
        if isinstance(error, ClientClosed):
            error.attempts = driver.attempts
        if watch is not None:
            attempts = error.attempts if isinstance(error, CallError) else driver.attempts
            watch.call_ended(None, error, attempts)
        raise
    if watch is not None:
        watch.call_ended(response, None, response.attempts)
    return response
