"""The HTTP engine: the asyncio runner of HTTP calls, performing what each call's driver decides.

The decisions are the call driver's (:mod:`microcall._driver`, the same for
HTTP and gRPC, free of I/O): which attempt to send, to which endpoint, with
what time limit, when to wait and when the call is over, and what each
outcome means. The engine performs them over asyncio: a task per attempt
sending through the transport, ``asyncio.wait`` until an attempt ends or the
driver's wait is over, and the losers of a finished race given ``linger``
seconds to complete (keeping their keep-alive connection) before they are
cancelled. It also holds the client's admission of calls (slots and queue),
reports to the observers, and turns the driver's result into the Response
returned or the one CallError raised, with the record of attempts that
every response and every error carries. The gRPC channels run the same
driver over grpc's own I/O (grpc/); the front doors own the client's event
loop (client/), the transports their connections (transports/).

A call with one attempt on a client with one endpoint and no breaker takes a
straight path (no task, no driver): it is the common case and must cost next
to nothing over the transport itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from yarl import URL

from microcall._admission import Admission
from microcall._attempt import Attempt, AttemptKind, was_resent
from microcall._body import Body, replay_refusal
from microcall._call import CallPolicies
from microcall._call_watch import CallWatch, Watch, Watching
from microcall._closing import as_reported
from microcall._driver import CallDriver, Start, start_call
from microcall._replicas import Replicas
from microcall._request import Request, endpoint_of
from microcall._response import Response
from microcall._stream import discard, discard_all, end_call
from microcall._wire import RETRY_AFTER_HEADER, attempt_headers, parse_retry_after
from microcall.errors import (
    AttemptTimeout,
    CallError,
    CircuitOpen,
    ClientOverloaded,
    DeadlineExceeded,
    TransportError,
)
from microcall.observe.hooks import AttemptScope, Observer
from microcall.policy.balancer import Endpoint
from microcall.policy.budget import RetryBudget
from microcall.policy.classify import Classifier, Verdict
from microcall.policy.strategy import Finish, Hedged, SingleAttempt, Strategy
from microcall.transports import Transport

# Below this much time left, an attempt cannot do useful work: connection set-up
# and a server's own floor eat it (aio-request refuses under 5 ms as well).
DEFAULT_DEADLINE_FLOOR = 0.005

# The calls a client holds at once, in flight plus queued. One core issues
# 2,400 (asyncio, the report) to 7,000 (uvloop, bench/overload.py)
# calls/s to a fast local server, so 1,000 held calls drain in 0.15-0.4 s,
# well inside the 1 s deadlines services commonly give each other, and take
# ~45 MB of RSS at 3x overload (bench/overload.py). It is ten times the
# default pool (100 connections): room for a backend whose answers take
# 100 ms or more. Unbounded, the same overload held 12,000-27,000 calls, the
# loop lagged by 0.35-8 s and goodput fell to nothing.
DEFAULT_MAX_CALLS = 1000

# Endpoint names kept at most (HttpRules): far more than any client's replicas.
_MAX_NAMES = 1024


def _record_of(
    index: int,
    kind: AttemptKind,
    endpoint: str,
    offset: float,
    duration: float,
    outcome: Response | CallError,
) -> Attempt:
    if isinstance(outcome, Response):
        return Attempt(
            index,
            kind,
            endpoint,
            offset,
            duration,
            outcome.status_code,
            resent=was_resent(outcome),
        )
    return Attempt(
        index,
        kind,
        endpoint,
        offset,
        duration,
        error=_name(outcome),
        resent=was_resent(outcome),
    )


class HttpRules:
    """What the call driver needs to know of HTTP (see :class:`microcall._driver.Rules`).

    An outcome is a Response or a CallError; the client's classifier judges
    it, and a Response judged worth retrying may say how long to wait first
    (Retry-After). An endpoint is named ``host:port`` of its base URL.
    """

    __slots__ = ("_classifier", "_names", "_replicas")

    record_type = Attempt

    def __init__(self, classifier: Classifier, replicas: Replicas | None) -> None:
        self._classifier = classifier
        self._replicas = replicas
        # Each endpoint's name, made once: every attempt's record carries one.
        self._names: dict[str, str] = {}

    def judge(
        self, outcome: Response | CallError, attempt_limited: bool
    ) -> tuple[Verdict, float | None]:
        # ``attempt_limited`` needs no reading here: an attempt ended by the
        # deadline already failed as DeadlineExceeded (Engine._send).
        if isinstance(outcome, Response):
            verdict = self._classifier(outcome, None)
            if verdict is Verdict.RETRY:
                hint = outcome.headers.get(RETRY_AFTER_HEADER)
                return verdict, parse_retry_after(hint, now_epoch=time.time()) if hint else None
            return verdict, None
        return self._classifier(None, outcome), None

    def timed_out(self, outcome: Response | CallError) -> bool:
        return isinstance(outcome, (AttemptTimeout, DeadlineExceeded))

    def target(self, endpoint: Endpoint) -> str:
        name = self._names.get(endpoint.address)
        if name is None:
            assert self._replicas is not None
            if len(self._names) >= _MAX_NAMES:  # discovery replaced the endpoints many times
                self._names.clear()
            name = self._names[endpoint.address] = endpoint_of(self._replicas.base_of(endpoint))
        return name

    # The record of an attempt that ended with an outcome (the same as the straight path's).
    record = staticmethod(_record_of)


class Engine:
    """Runs calls over one transport and one replica group; shared by all of a client's calls."""

    def __init__(
        self,
        transport: Transport,
        *,
        classifier: Classifier,
        replicas: Replicas | None = None,
        budget: RetryBudget | None = None,
        now: Callable[[], float] = time.monotonic,
        floor: float = DEFAULT_DEADLINE_FLOOR,
        rng: random.Random | None = None,
        observers: Sequence[Observer] = (),
        max_calls: int = DEFAULT_MAX_CALLS,
        slots: int | None = None,
    ) -> None:
        self.transport = transport
        # ``slots`` calls in flight at once (None: all of max_calls); the rest queue.
        self.admission = Admission(limit=max_calls, slots=max_calls if slots is None else slots)
        self.observers = tuple(observers)
        self.watching = Watching(self.observers) if self.observers else None
        self.replicas = replicas
        self.budget = budget
        self._now = now
        self._floor = floor
        # The decisions HTTP and gRPC calls share (plans, learned delays, budgets).
        self._policies = CallPolicies(budget=budget, floor=floor, rng=rng)
        self._rules = HttpRules(classifier, replicas)
        self._lingering: set[asyncio.Task[Response]] = set()
        # Direct calls run in the callers' threads (_direct_call): every observer must allow it.
        self.observers_anywhere = all(getattr(o, "thread_safe", False) for o in self.observers)

    def call(
        self,
        request: Request,
        *,
        expires_at: float,
        priority: str | None,
        strategy: Strategy,
    ) -> Coroutine[Any, Any, Response]:
        """Run ``request`` under ``strategy`` until ``expires_at``; a Response or a CallError.

        A plain function returning the coroutine to await: the common call
        then runs as one coroutine (``_single``) over the transport's, and
        every suspension of the request passes through as few frames as possible.

        The clock is read when the coroutine starts running, not here: on a
        loop that runs late, a call built long before it starts must not arm
        its timer for time it no longer has.
        """
        watching = self.watching
        watch = watching.call(request) if watching is not None else None
        replicas = self.replicas
        routed = replicas is not None and request.path is not None
        if (type(strategy) is SingleAttempt or not request.replayable) and (
            not routed or replicas.single  # type: ignore[union-attr]
        ):
            return self._single(request, expires_at, priority, watch)
        return self._planned_call(request, expires_at, priority, strategy, routed, watch)

    def _started(self, request: Request, expires_at: float, watch: CallWatch | None) -> float:
        """The call begins now: its deposit into the budget; refused if too little time is left."""
        start = self._now()
        if self.budget is not None:
            self.budget.deposit(start)
        remaining = expires_at - start
        if remaining < self._floor:
            error = self._too_late(request, remaining, ())
            if watch is not None:
                watch.call_ended(None, error, ())
            raise error
        return start

    async def _single(
        self,
        request: Request,
        expires_at: float,
        priority: str | None,
        watch: CallWatch | None,
    ) -> Response:
        admission = self.admission
        if admission.busy < admission.slots:
            start = sent = self._started(request, expires_at, watch)
            admission.busy += 1
            remaining = expires_at - start
        elif admission.refuses():
            raise self._refused(request, watch)
        else:
            start = self._started(request, expires_at, watch)
            remaining = await self._queue(request, expires_at, watch)
            # The attempt starts once a slot is held: the wait is the call's,
            # not the attempt's (whose duration is the time on the wire).
            sent = expires_at - remaining
        headers = attempt_headers(request.headers, remaining, priority)
        scopes = (
            watch.attempt_started(0, AttemptKind.FIRST, request.url, headers)
            if type(watch) is Watch and watch.following
            else None
        )
        try:
            response = await self.transport.send(request, request.url, headers, remaining)
        except CallError as error:
            admission.release()
            error = self._single_failed(request, start, sent, error, watch, scopes)
            raise error
        except BaseException as stopped:  # cancelled, or a bug: observers still hear the end
            admission.release()
            self._single_stopped(request, start, sent, stopped, watch, scopes)
            raise
        admission.release()
        return self._single_answered(request, start, sent, response, watch, scopes)

    def _single_answered(
        self,
        request: Request,
        start: float,
        sent: float,
        response: Response,
        watch: CallWatch | None,
        scopes: list[AttemptScope] | None,
    ) -> Response:
        end = self._now()
        record = Attempt(
            0,
            AttemptKind.FIRST,
            request.endpoint,
            sent - start,
            end - sent,
            response.status_code,
            resent=was_resent(response),
        )
        response.attempts = (record,)
        response.elapsed = end - start
        if watch is not None:
            if scopes:
                Watch.attempt_ended(scopes, record)
            if request.stream:
                end_call(watch, response)  # a stream's call ends with its body
            else:
                watch.call_ended(response, None, response.attempts)
        return response

    def _single_failed(
        self,
        request: Request,
        start: float,
        sent: float,
        error: CallError,
        watch: CallWatch | None,
        scopes: list[AttemptScope] | None,
    ) -> CallError:
        """The error a single attempt's failure ends its call with, its record on it."""
        if isinstance(error, AttemptTimeout):
            error = _deadline_exceeded(request, request.url, error)
        record = self._record(0, AttemptKind.FIRST, request.url, sent - start, sent, error)
        error.attempts = (record,)
        if watch is not None:
            if scopes:
                Watch.attempt_ended(scopes, record)
            watch.call_ended(None, error, error.attempts)
        return error

    def _single_stopped(
        self,
        request: Request,
        start: float,
        sent: float,
        stopped: BaseException,
        watch: CallWatch | None,
        scopes: list[AttemptScope] | None,
    ) -> None:
        """Observers hear of a single attempt stopped by something not a CallError."""
        if watch is None:
            return
        record = Attempt(
            0,
            AttemptKind.FIRST,
            request.endpoint,
            sent - start,
            self._now() - sent,
            error=type(stopped).__name__,
            cancelled=isinstance(stopped, asyncio.CancelledError),
        )
        if scopes:
            Watch.attempt_ended(scopes, record)
        watch.call_ended(None, as_reported(stopped, request, (record,)), (record,))

    def refusal(self, request: Request) -> ClientOverloaded:
        """The error of a call refused before it starts (``admission.refuses()``), observers told.

        What :meth:`call` raises first when the client has no room, for a
        caller that checks the admission itself and so makes no coroutine
        for a call that will not run (``CallsInFlight.guard``).
        """
        watching = self.watching
        return self._refused(request, watching.call(request) if watching is not None else None)

    def _refused(self, request: Request, watch: CallWatch | None) -> ClientOverloaded:
        """The error of a call the client has no room for, which observers hear of.

        Checked before anything else a call does: a client past its bound
        may refuse tens of thousands of calls a second, on the CPU the calls
        it sends need, so a refusal reads no clock, deposits nothing into the
        retry budget (it sends nothing) and makes no waiting coroutine.
        """
        error = self.admission.overloaded(request)
        if watch is not None:
            watch.call_ended(None, error, ())
        return error

    async def _queue(self, request: Request, expires_at: float, watch: CallWatch | None) -> float:
        """Wait for one of the client's slots; the time left once one is held.

        A call that waited past its deadline ends here, never sent:
        observers hear of it as of any other end.
        """
        admission = self.admission
        try:
            await admission.wait(request, expires_at - self._now())
            remaining = expires_at - self._now()
            if remaining < self._floor:
                admission.release()
                raise self._too_late(request, remaining, ())
        except CallError as error:
            if watch is not None:
                watch.call_ended(None, error, ())
            raise
        return remaining

    async def _planned_call(
        self,
        request: Request,
        expires_at: float,
        priority: str | None,
        strategy: Strategy,
        routed: bool,
        watch: CallWatch | None,
    ) -> Response:
        replicas = self.replicas
        admission = self.admission
        if admission.busy < admission.slots:
            start = self._started(request, expires_at, watch)
            admission.busy += 1
        elif admission.refuses():
            raise self._refused(request, watch)
        else:
            start = self._started(request, expires_at, watch)
            await self._queue(request, expires_at, watch)
        try:
            if routed and replicas is not None and replicas.discovery is not None:
                await replicas.discover(self._now)
            response = await self._planned(
                request, start, expires_at, priority, strategy, routed, watch
            )
        except BaseException as error:  # a CallError, or cancelled: observers hear the end
            if watch is not None:
                attempts = error.attempts if isinstance(error, CallError) else ()
                watch.call_ended(None, as_reported(error, request, attempts), attempts)
            raise
        finally:
            admission.release()
        if watch is not None:
            end_call(watch, response)  # a stream's call ends with its body
        return response

    async def _planned(
        self,
        request: Request,
        start: float,
        expires_at: float,
        priority: str | None,
        strategy: Strategy,
        routed: bool,
        watch: CallWatch | None,
    ) -> Response:
        """Perform what the call's driver decides, with a task per attempt."""
        now = self._now
        driver: CallDriver[Response | CallError] = start_call(
            self._policies,
            self._rules,
            strategy,
            replayable=request.replayable,
            route=request.route,
            start=start,
            expires_at=expires_at,
            group=self.replicas if routed else None,
            target=request.endpoint,
            # A body read once refuses every extra attempt (microcall._body).
            refuse_extra=None
            if type(request.body) is not Body
            else partial(replay_refusal, request),
        )
        loop = asyncio.get_running_loop()
        # Each attempt in flight: its index, and its observers' scopes.
        running: dict[asyncio.Task[Response], tuple[int, list[AttemptScope] | None]] = {}
        concluded = False
        # Only a streamed answer holds a connection after it arrived: other
        # calls skip gathering what was dropped.
        streamed = request.stream
        try:
            while True:
                moment = now()
                action = driver.next(moment)
                if isinstance(action, Start):
                    endpoint = action.endpoint
                    url = request.url if endpoint is None else self._url_on(endpoint, request)
                    headers = attempt_headers(request.headers, action.timeout, priority)
                    scopes = (
                        watch.attempt_started(action.index, action.kind, url, headers)
                        if type(watch) is Watch and watch.following
                        else None
                    )
                    if streamed:  # superseded answers let go of their connections now
                        discard_all(driver.dropped())
                    coro = self._send(request, url, headers, action.timeout, action.by_deadline)
                    running[loop.create_task(coro)] = (action.index, scopes)
                    continue
                if isinstance(action, Finish):
                    concluded = True
                    break
                wait = None if action.until is None else max(0.0, action.until - moment)
                if not running:
                    await asyncio.sleep(wait or 0.0)  # backoff between sequential attempts
                    continue
                done, _ = await asyncio.wait(
                    running, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    index, scopes = running.pop(task)
                    record = driver.finished(index, _outcome_of(task), now())
                    if scopes:
                        Watch.attempt_ended(scopes, record)
        finally:
            if streamed:  # answers the call will not return let go of their connections
                discard_all(driver.dropped())
            moment = now()
            # Losers of a finished race may linger; if the call itself was
            # cancelled (or failed), everything stops at once.
            linger = strategy.linger if concluded and isinstance(strategy, Hedged) else 0.0
            for task, (index, scopes) in running.items():
                record = driver.lost(index, moment)
                if scopes:
                    Watch.attempt_ended(scopes, record)
                self._let_finish_or_cancel(task, driver, index, linger)
        # The answers the call does not return (retried, or beaten by the
        # winner) are driver.dropped(); a lingering loser's arrives in settled().
        return self._result(request, driver, start, expires_at)

    def _result(
        self,
        request: Request,
        driver: CallDriver[Response | CallError],
        start: float,
        expires_at: float,
    ) -> Response:
        """The finished call's response; or raise its error, with every attempt's record."""
        attempts = driver.attempts
        won = driver.winner()
        if won is None:
            if driver.circuit_open is not None:  # a breaker refused the first attempt
                raise CircuitOpen(
                    f"circuit open for {driver.circuit_open}: not sent",
                    request=request,
                    attempts=attempts,
                )
            raise self._too_late(request, expires_at - self._now(), attempts)
        result = won[0]
        if isinstance(result, Response):
            result.attempts = attempts
            result.elapsed = self._now() - start
            return result
        if isinstance(result, AttemptTimeout) and driver.deadline_ended(self._now()):
            result = _deadline_exceeded(request, request.url, result)
        result.attempts = attempts
        raise result

    def _url_on(self, endpoint: Endpoint, request: Request) -> URL:
        assert self.replicas is not None
        assert request.path is not None
        base = self.replicas.base_of(endpoint)
        return URL(f"{str(base).rstrip('/')}/{request.path}", encoded=True)

    # ------------------------------------------------------------ losers

    def _let_finish_or_cancel(
        self,
        task: asyncio.Task[Response],
        driver: CallDriver[Response | CallError],
        index: int,
        linger: float,
    ) -> None:
        loop = task.get_loop()
        timer = loop.call_later(linger, task.cancel) if linger > 0 else None
        if timer is None:
            task.cancel()
        self._lingering.add(task)

        def settled(done: asyncio.Task[Response]) -> None:
            self._lingering.discard(done)
            if timer is not None:
                timer.cancel()
            if done.cancelled():
                driver.settled(index, None, self._now())
                return
            error = done.exception()  # retrieved, so asyncio does not log it
            if isinstance(error, CallError):
                driver.settled(index, error, self._now())
            elif error is None:
                # A loser's answer, dropped here: the call returned another.
                outcome = done.result()
                discard(outcome)  # a streamed loser lets go of its connection
                driver.settled(index, outcome, self._now())

        task.add_done_callback(settled)

    async def aclose(self) -> None:
        """Stop lingering losers and discovery; the transport is closed by its owner."""
        for task in list(self._lingering):
            task.cancel()
        if self._lingering:
            await asyncio.gather(*self._lingering, return_exceptions=True)
        if self.replicas is not None:
            await self.replicas.aclose()

    # ------------------------------------------------------------ sending

    async def _send(
        self,
        request: Request,
        url: URL,
        headers: dict[str, str],
        timeout: float,
        by_deadline: bool,
    ) -> Response:
        try:
            return await self.transport.send(request, url, headers, timeout)
        except AttemptTimeout as exc:
            if by_deadline:
                raise _deadline_exceeded(request, url, exc) from exc
            raise

    def _record(
        self,
        index: int,
        kind: AttemptKind,
        url: URL,
        offset: float,
        began: float,
        outcome: Response | CallError,
    ) -> Attempt:
        return _record_of(index, kind, endpoint_of(url), offset, self._now() - began, outcome)

    def _too_late(
        self, request: Request, remaining: float, attempts: tuple[Attempt, ...]
    ) -> DeadlineExceeded:
        left_ms = max(remaining, 0.0) * 1000
        return DeadlineExceeded(
            f"deadline exceeded: {left_ms:.1f} ms left, below the {self._floor * 1000:.0f} ms "
            "needed to start an attempt",
            request=request,
            attempts=attempts,
        )


def _deadline_exceeded(request: Request, url: URL, timeout: AttemptTimeout) -> DeadlineExceeded:
    error = DeadlineExceeded(f"deadline exceeded waiting for {endpoint_of(url)}", request=request)
    error.__cause__ = timeout
    return error


def _name(outcome: CallError) -> str:
    if isinstance(outcome, (AttemptTimeout, DeadlineExceeded)):
        return type(outcome).__name__  # the duration says the rest
    if isinstance(outcome, TransportError):
        return f"{type(outcome).__name__}: {outcome.message}"
    return type(outcome).__name__


def _outcome_of(task: asyncio.Task[Response]) -> Response | CallError:
    error = task.exception()
    if error is None:
        return task.result()
    if isinstance(error, CallError):
        return error
    raise error  # a bug or a usage error: not an outcome to classify
