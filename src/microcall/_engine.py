"""The engine: turns one logical call into attempts, as a strategy's plan decides.

This is the only module that awaits, sleeps and cancels. Policies decide,
transports send, the engine wires them together and keeps the record of
attempts that every response and every error carries.

A call with a single attempt takes a straight path (no task, no plan): it is
the common case and must cost next to nothing over the transport itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.errors import AttemptTimeout, CallError, DeadlineExceeded
from microcall.policy.backoff import parse_retry_after
from microcall.policy.classify import Classifier, Verdict
from microcall.policy.strategy import Finish, Send, SingleAttempt, Strategy
from microcall.transports import Transport

TIMEOUT_HEADER = "X-Request-Timeout"
PRIORITY_HEADER = "X-Request-Priority"

# Below this much time left, an attempt cannot do useful work: connection set-up
# and a server's own floor eat it (aio-request refuses under 5 ms as well).
DEFAULT_DEADLINE_FLOOR = 0.005


class Engine:
    """Runs calls over one transport with one classifier; shared by all of a client's calls."""

    __slots__ = ("_classifier", "_floor", "_now", "_rng", "transport")

    def __init__(
        self,
        transport: Transport,
        *,
        classifier: Classifier,
        now: Callable[[], float] = time.monotonic,
        floor: float = DEFAULT_DEADLINE_FLOOR,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self._classifier = classifier
        self._now = now
        self._floor = floor
        self._rng = rng or random.Random()

    async def call(
        self, request: Request, *, expires_at: float, priority: str, strategy: Strategy
    ) -> Response:
        """Run ``request`` under ``strategy`` until ``expires_at``; a Response or a CallError."""
        start = self._now()
        if type(strategy) is SingleAttempt or not request.replayable:
            return await self._single(request, start, expires_at, priority)
        return await self._planned(request, start, expires_at, priority, strategy)

    async def _single(
        self, request: Request, start: float, expires_at: float, priority: str
    ) -> Response:
        remaining = expires_at - start
        if remaining < self._floor:
            raise self._too_late(request, remaining, ())
        try:
            response = await self._send(request, remaining, True, priority)
        except CallError as error:
            error.attempts = (self._record(0, AttemptKind.FIRST, request, 0.0, start, error),)
            raise
        end = self._now()
        response.attempts = (
            Attempt(0, AttemptKind.FIRST, request.endpoint, 0.0, end - start, response.status_code),
        )
        response.elapsed = end - start
        return response

    async def _planned(
        self, request: Request, start: float, expires_at: float, priority: str, strategy: Strategy
    ) -> Response:
        now = self._now
        plan = strategy.plan(expires_at=expires_at, floor=self._floor, rng=self._rng)
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Task[Response], int] = {}
        kinds: list[AttemptKind] = []
        started: list[float] = []
        outcomes: list[Response | CallError | None] = []
        records: list[Attempt | None] = []
        try:
            while True:
                moment = now()
                action = plan.decide(moment)
                if isinstance(action, Send):
                    timeout, by_deadline = expires_at - moment, True
                    limit = plan.attempt_timeout
                    if limit is not None and limit < timeout:
                        timeout, by_deadline = limit, False
                    coro = self._send(request, timeout, by_deadline, priority)
                    running[loop.create_task(coro)] = len(outcomes)
                    kinds.append(action.kind)
                    started.append(moment)
                    outcomes.append(None)
                    records.append(None)
                    continue
                if isinstance(action, Finish):
                    break
                wait = None if action.until is None else max(0.0, action.until - moment)
                if not running:
                    await asyncio.sleep(wait or 0.0)  # backoff between sequential attempts
                    continue
                done, _ = await asyncio.wait(
                    running, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    index = running.pop(task)
                    outcome = _outcome_of(task)
                    records[index] = self._record(
                        index,
                        kinds[index],
                        request,
                        started[index] - start,
                        started[index],
                        outcome,
                    )
                    outcomes[index] = outcome
                    verdict, retry_after = self._judge(outcome)
                    plan.finished(index, verdict, now(), retry_after)
        finally:
            # Losers (and everything, if the caller cancelled us): stop them now.
            # aiohttp closes a connection whose response was not read to the end,
            # so nothing is left half-read in the pool.
            for task, index in running.items():
                task.cancel()
                task.add_done_callback(_consume)
                records[index] = Attempt(
                    index,
                    kinds[index],
                    request.endpoint,
                    started[index] - start,
                    now() - started[index],
                    cancelled=True,
                )

        attempts = tuple(record for record in records if record is not None)
        winner = action.winner
        if winner is None:
            raise self._too_late(request, expires_at - now(), attempts)
        result = outcomes[winner]
        assert result is not None
        if isinstance(result, Response):
            result.attempts = attempts
            result.elapsed = now() - start
            return result
        result.attempts = attempts
        raise result

    async def _send(
        self, request: Request, timeout: float, by_deadline: bool, priority: str
    ) -> Response:
        # The attempt's own time, not the call's: the server should not work
        # longer than this attempt will wait.
        headers = {**request.headers, TIMEOUT_HEADER: f"{timeout:.3f}", PRIORITY_HEADER: priority}
        try:
            return await self.transport.send(request, headers, timeout)
        except AttemptTimeout as exc:
            if by_deadline:
                raise DeadlineExceeded(
                    f"deadline exceeded waiting for {request.endpoint}", request=request
                ) from exc
            raise

    def _judge(self, outcome: Response | CallError) -> tuple[Verdict, float | None]:
        if isinstance(outcome, Response):
            verdict = self._classifier(outcome, None)
            if verdict is Verdict.RETRY:
                hint = outcome.headers.get("Retry-After")
                return verdict, parse_retry_after(hint, now_epoch=time.time()) if hint else None
            return verdict, None
        return self._classifier(None, outcome), None

    def _record(
        self,
        index: int,
        kind: AttemptKind,
        request: Request,
        offset: float,
        began: float,
        outcome: Response | CallError,
    ) -> Attempt:
        duration = self._now() - began
        if isinstance(outcome, Response):
            return Attempt(index, kind, request.endpoint, offset, duration, outcome.status_code)
        if isinstance(outcome, (AttemptTimeout, DeadlineExceeded)):
            error = f"{type(outcome).__name__}"  # the duration says the rest
        else:
            error = f"{type(outcome).__name__}: {outcome.message}"
        return Attempt(index, kind, request.endpoint, offset, duration, error=error)

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


def _outcome_of(task: asyncio.Task[Response]) -> Response | CallError:
    error = task.exception()
    if error is None:
        return task.result()
    if isinstance(error, CallError):
        return error
    raise error  # a bug or a usage error: not an outcome to classify


def _consume(task: asyncio.Task[Response]) -> None:
    # A loser may have failed just before it was cancelled; fetch its
    # exception so asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()
