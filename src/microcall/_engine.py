"""The HTTP engine: turns one logical HTTP call into attempts, as a strategy's plan decides.

Policies decide, transports send, the engine wires them together over
asyncio and keeps the record of attempts that every response and every
error carries. It is where an HTTP call awaits, sleeps and cancels; the
front doors own the client's event loop (client/), the transports their
connections (transports/), and the gRPC channels run their own attempts
over grpc's I/O (grpc/).

For every call: deposit into the retry budget; make the strategy's plan (for
a learned hedge, with the route's current delay); then loop: ask the plan,
and for each Send withdraw from the budget (retries and hedges only), pick an
endpoint (a hedge avoids the replicas already tried), ask its breaker, send.
Each outcome is classified, reported to the endpoint's record and the
learned delay, and handed back to the plan. When the plan finishes, losers
still running get ``linger`` seconds to complete (keeping their keep-alive
connection) before they are cancelled.

A call with one attempt on a client with one endpoint and no breaker takes a
straight path (no task, no plan): it is the common case and must cost next to
nothing over the transport itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

from microcall._admission import Admission
from microcall._attempt import Attempt, AttemptKind, RefusalReason, was_resent
from microcall._body import replay_refusal
from microcall._call import CallPolicies, Learner
from microcall._call_watch import Watch
from microcall._replicas import Replicas
from microcall._request import Request, endpoint_of
from microcall._response import Response
from microcall._stream import discard, discard_all, end_call
from microcall._wire import RETRY_AFTER_HEADER, attempt_headers, parse_retry_after
from microcall.errors import (
    AttemptTimeout,
    CallError,
    CircuitOpen,
    DeadlineExceeded,
    TransportError,
)
from microcall.observe.hooks import AttemptScope, Observer
from microcall.policy.balancer import Endpoint
from microcall.policy.budget import RetryBudget
from microcall.policy.classify import Classifier, Verdict
from microcall.policy.strategy import Finish, Hedged, Send, SingleAttempt, Strategy
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


@dataclass(slots=True)
class _Running:
    """An attempt in flight."""

    index: int
    kind: AttemptKind
    started: float
    endpoint: Endpoint | None
    url: URL
    scopes: list[AttemptScope] | None


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
        self.replicas = replicas
        self.budget = budget
        self._classifier = classifier
        self._now = now
        self._floor = floor
        # The decisions HTTP and gRPC calls share (plans, learned delays, budgets).
        self._policies = CallPolicies(budget=budget, floor=floor, rng=rng)
        self._lingering: set[asyncio.Task[Response]] = set()

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
        watch = Watch(self.observers, request) if self.observers else None
        replicas = self.replicas
        routed = replicas is not None and request.path is not None
        if (type(strategy) is SingleAttempt or not request.replayable) and (
            not routed or replicas.single  # type: ignore[union-attr]
        ):
            return self._single(request, expires_at, priority, watch)
        return self._planned_call(request, expires_at, priority, strategy, routed, watch)

    def _started(self, request: Request, expires_at: float, watch: Watch | None) -> float:
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
        watch: Watch | None,
    ) -> Response:
        start = self._started(request, expires_at, watch)
        remaining = expires_at - start
        admission = self.admission
        if admission.busy < admission.slots:
            admission.busy += 1
        else:
            remaining = await self._queue(request, expires_at, watch)
        headers = attempt_headers(request.headers, remaining, priority)
        scopes = (
            watch.attempt_started(0, AttemptKind.FIRST, request.url, headers) if watch else None
        )
        try:
            response = await self.transport.send(request, request.url, headers, remaining)
        except CallError as error:
            admission.release()
            if isinstance(error, AttemptTimeout):
                error = _deadline_exceeded(request, request.url, error)
            record = self._record(0, AttemptKind.FIRST, request.url, 0.0, start, error)
            error.attempts = (record,)
            if watch is not None:
                if scopes:
                    Watch.attempt_ended(scopes, record)
                watch.call_ended(None, error, error.attempts)
            raise error
        except BaseException as stopped:  # cancelled, or a bug: observers still hear the end
            admission.release()
            if watch is not None:
                record = Attempt(
                    0,
                    AttemptKind.FIRST,
                    request.endpoint,
                    0.0,
                    self._now() - start,
                    error=type(stopped).__name__,
                    cancelled=isinstance(stopped, asyncio.CancelledError),
                )
                if scopes:
                    Watch.attempt_ended(scopes, record)
                watch.call_ended(None, stopped, (record,))
            raise
        admission.release()
        end = self._now()
        record = Attempt(
            0,
            AttemptKind.FIRST,
            request.endpoint,
            0.0,
            end - start,
            response.status_code,
            resent=was_resent(response),
        )
        response.attempts = (record,)
        response.elapsed = end - start
        if watch is not None:
            if scopes:
                Watch.attempt_ended(scopes, record)
            end_call(watch, response)  # a stream's call ends with its body
        return response

    async def _queue(self, request: Request, expires_at: float, watch: Watch | None) -> float:
        """Wait for one of the client's slots; the time left once one is held.

        A call that waited past its deadline, or that finds the queue full,
        ends here, never sent: observers hear of it as of any other end.
        """
        admission = self.admission
        try:
            if admission.full():  # refused without making the waiting coroutine
                raise admission.overloaded(request)
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
        watch: Watch | None,
    ) -> Response:
        replicas = self.replicas
        start = self._started(request, expires_at, watch)
        admission = self.admission
        if admission.busy < admission.slots:
            admission.busy += 1
        else:
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
                watch.call_ended(None, error, attempts)
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
        watch: Watch | None,
    ) -> Response:
        now = self._now
        plan, learner = self._policies.plan(
            strategy,
            replayable=request.replayable,
            route=request.route,
            start=start,
            expires_at=expires_at,
        )
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Task[Response], _Running] = {}
        outcomes: list[Response | CallError | None] = []
        records: list[Attempt | None] = []
        refusal: CallError | None = None
        refused_any = False  # a budget or a breaker stopped an attempt: not the deadline
        failed: list[Endpoint] = []  # a retry goes elsewhere when it can
        concluded = False
        try:
            while True:
                moment = now()
                action = plan.decide(moment)
                if isinstance(action, Send):
                    index = len(outcomes)
                    # A body read once refuses every extra attempt (microcall._body).
                    refused = replay_refusal(request, action.kind) or self._policies.admit(
                        action.kind, learner, moment
                    )
                    endpoint = None
                    if refused is None and routed:
                        endpoint, circuit_open = self._pick(request, running, failed, moment)
                        if circuit_open is not None:
                            refusal, refused = circuit_open, RefusalReason.CIRCUIT_OPEN
                    if refused is not None:
                        # Never sent: the plan finishes with what it has; the
                        # attempts list shows the refusal.
                        refused_any = True
                        plan.refused()
                        outcomes.append(None)
                        records.append(
                            Attempt(
                                index,
                                action.kind,
                                "",
                                moment - start,
                                0.0,
                                error=refused,
                                sent=False,
                            )
                        )
                        continue
                    timeout, by_deadline = expires_at - moment, True
                    limit = plan.attempt_timeout
                    # An attempt whose own limit would end it with less than
                    # the floor left is ended by the deadline: no attempt could
                    # follow it, so it runs to the deadline and says so.
                    if limit is not None and limit < timeout - self._floor:
                        timeout, by_deadline = limit, False
                    url = request.url if endpoint is None else self._url_on(endpoint, request)
                    headers = attempt_headers(request.headers, timeout, priority)
                    scopes = (
                        watch.attempt_started(index, action.kind, url, headers) if watch else None
                    )
                    discard_all(outcomes)  # superseded: a streamed answer lets go of its connection
                    coro = self._send(request, url, headers, timeout, by_deadline)
                    running[loop.create_task(coro)] = _Running(
                        index, action.kind, moment, endpoint, url, scopes
                    )
                    outcomes.append(None)
                    records.append(None)
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
                    attempt = running.pop(task)
                    outcome = _outcome_of(task)
                    finished = now()
                    verdict, retry_after = self._judge(outcome)
                    self._report(request, attempt, outcome, verdict, finished, learner)
                    if verdict is not Verdict.ACCEPT and attempt.endpoint is not None:
                        failed.append(attempt.endpoint)
                    record = self._record(
                        attempt.index,
                        attempt.kind,
                        attempt.url,
                        attempt.started - start,
                        attempt.started,
                        outcome,
                    )
                    records[attempt.index] = record
                    if attempt.scopes:
                        Watch.attempt_ended(attempt.scopes, record)
                    outcomes[attempt.index] = outcome
                    plan.finished(attempt.index, verdict, finished, retry_after)
        finally:
            # Streamed answers the call will not return let go of their connections.
            discard_all(
                outcomes, action.winner if concluded and isinstance(action, Finish) else None
            )
            moment = now()
            # Losers of a finished race may linger; if the call itself was
            # cancelled (or failed), everything stops at once.
            linger = strategy.linger if concluded and isinstance(strategy, Hedged) else 0.0
            for task, attempt in running.items():
                record = Attempt(
                    attempt.index,
                    attempt.kind,
                    endpoint_of(attempt.url),
                    attempt.started - start,
                    moment - attempt.started,
                    cancelled=True,
                )
                records[attempt.index] = record
                if attempt.scopes:
                    Watch.attempt_ended(attempt.scopes, record)
                self._let_finish_or_cancel(task, attempt, request, linger, learner)

        attempts = tuple(record for record in records if record is not None)
        winner = action.winner
        if winner is None:
            if refusal is not None:  # the breaker refused the first attempt
                refusal.attempts = attempts
                raise refusal
            raise self._too_late(request, expires_at - now(), attempts)
        result = outcomes[winner]
        assert result is not None
        if isinstance(result, Response):
            result.attempts = attempts
            result.elapsed = now() - start
            return result
        if isinstance(result, AttemptTimeout) and self._deadline_ended(
            request, result, strategy, len(outcomes), refused_any, expires_at - now()
        ):
            result = _deadline_exceeded(request, request.url, result)
        result.attempts = attempts
        raise result

    def _deadline_ended(
        self,
        request: Request,
        timeout: AttemptTimeout,
        strategy: Strategy,
        started: int,
        refused: bool,
        remaining: float,
    ) -> bool:
        """Whether the deadline, not the strategy's attempts, ended a call whose last attempt timed out.

        It did when too little was left to start another attempt, or when the
        strategy would have sent another (attempts left, none refused, the
        timeout retriable) and only the deadline kept it from doing so.
        """
        if remaining < self._floor:
            return True
        allowed = getattr(strategy, "attempts", 1) if request.replayable else 1
        return started < allowed and not refused and self._judge(timeout)[0] is Verdict.RETRY

    # ------------------------------------------------------------ decisions

    def _pick(
        self,
        request: Request,
        running: dict[asyncio.Task[Response], _Running],
        failed: list[Endpoint],
        now: float,
    ) -> tuple[Endpoint | None, CallError | None]:
        """The endpoint for the next attempt: not one this call is waiting on or saw fail."""
        replicas = self.replicas
        assert replicas is not None
        avoid = [attempt.endpoint for attempt in running.values() if attempt.endpoint is not None]
        avoid.extend(failed)
        endpoint = replicas.pick(now, avoid)
        breaker = endpoint.breaker
        if breaker is not None and not breaker.allow(now):
            return None, CircuitOpen(
                f"circuit open for {endpoint_of(replicas.base_of(endpoint))}: not sent",
                request=request,
            )
        replicas.started(endpoint, now)
        return endpoint, None

    def _url_on(self, endpoint: Endpoint, request: Request) -> URL:
        assert self.replicas is not None
        assert request.path is not None
        base = self.replicas.base_of(endpoint)
        return URL(f"{str(base).rstrip('/')}/{request.path}", encoded=True)

    def _judge(self, outcome: Response | CallError) -> tuple[Verdict, float | None]:
        if isinstance(outcome, Response):
            verdict = self._classifier(outcome, None)
            if verdict is Verdict.RETRY:
                hint = outcome.headers.get(RETRY_AFTER_HEADER)
                return verdict, parse_retry_after(hint, now_epoch=time.time()) if hint else None
            return verdict, None
        return self._classifier(None, outcome), None

    def _report(
        self,
        request: Request,
        attempt: _Running,
        outcome: Response | CallError,
        verdict: Verdict,
        now: float,
        learner: Learner | None,
    ) -> None:
        latency = now - attempt.started
        success = verdict is Verdict.ACCEPT
        if attempt.endpoint is not None and self.replicas is not None:
            self.replicas.finished(attempt.endpoint, latency, success, now)
        if learner is not None and (
            success or isinstance(outcome, (AttemptTimeout, DeadlineExceeded))
        ):
            # Timeouts count with the time they ran: leaving the slow tail out
            # would let the delay drift down and hedging feed on itself.
            learner[0].observe(request.route, latency, now)

    # ------------------------------------------------------------ losers

    def _let_finish_or_cancel(
        self,
        task: asyncio.Task[Response],
        attempt: _Running,
        request: Request,
        linger: float,
        learner: Learner | None,
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
            now = self._now()
            if done.cancelled():
                if attempt.endpoint is not None and self.replicas is not None:
                    self.replicas.abandoned(attempt.endpoint, now - attempt.started, now)
                if learner is not None:
                    learner[0].observe(request.route, now - attempt.started, now)
                return
            error = done.exception()  # retrieved, so asyncio does not log it
            if isinstance(error, CallError):
                outcome: Response | CallError = error
            elif error is None:
                outcome = done.result()
                discard(outcome)  # a streamed loser lets go of its connection
            else:
                return
            verdict, _ = self._judge(outcome)
            self._report(request, attempt, outcome, verdict, now, learner)

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
        duration = self._now() - began
        endpoint = endpoint_of(url)
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
