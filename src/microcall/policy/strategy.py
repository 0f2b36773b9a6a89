"""Strategies: how one logical call becomes attempts.

Theory of operation. A strategy is configuration (a frozen value shared by
every call); ``strategy.plan(...)`` makes the per-call state machine, a
:class:`Plan`. The engine drives it in a loop::

    action = plan.decide(now)
    Send(kind)  -> start an attempt now (the plan has already counted it)
    Wait(until) -> wait until an outcome arrives or ``until`` passes (None: an outcome)
    Finish(i)   -> the call is over; attempt i's outcome is the result
                   (None: no attempt produced one, the deadline is exceeded)

and reports each outcome with ``plan.finished(index, verdict, now, retry_after)``.

Two guarantees hold for every plan, whatever the outcomes and timings (they
are property-tested): no attempt is sent when less than ``floor`` seconds
remain before the deadline, and no more than ``attempts`` are ever sent.

* ``SingleAttempt``: one attempt, its outcome is the result.
* ``Retry``: sequential attempts; after a retriable failure wait a jittered
  exponential backoff (or the server's Retry-After, whichever is longer) and
  try again, while attempts and the deadline allow.
* ``Hedged``: start the first attempt; if no answer arrives within ``delay``,
  start another in parallel, and so on up to ``attempts``. A retriable failure
  starts the next attempt at once. The first accepted outcome wins and the
  engine cancels the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from microcall._attempt import AttemptKind
from microcall._durations import Seconds, to_seconds
from microcall._validate import whole
from microcall.errors import ConfigurationError
from microcall.policy.backoff import Backoff
from microcall.policy.classify import Verdict
from microcall.policy.hedge_delay import LearnedDelayConfig

# Hedging more than this many copies of one request is never useful: the
# tail it cuts is already gone after the second or third.
MAX_HEDGED_ATTEMPTS = 5
MAX_RETRY_ATTEMPTS = 20
# A fixed hedge delay, and the learned one's starting point: near the p95 of
# a typical service-to-service call on a local network.
DEFAULT_HEDGE_DELAY = 0.05
# Finagle's default: hedge past the p95, about 5% extra load.
DEFAULT_MAX_EXTRA_LOAD = 0.05
# Long enough for a loser held up by a moderately slow replica to finish and
# keep its connection, short enough that a stuck one is soon stopped.
DEFAULT_LINGER = 0.1


@dataclass(frozen=True, slots=True)
class Send:
    kind: AttemptKind


@dataclass(frozen=True, slots=True)
class Wait:
    until: float | None


@dataclass(frozen=True, slots=True)
class Finish:
    winner: int | None


Action = Send | Wait | Finish

_SEND_FIRST = Send(AttemptKind.FIRST)
_SEND_RETRY = Send(AttemptKind.RETRY)
_SEND_HEDGE = Send(AttemptKind.HEDGE)
_WAIT_FOR_OUTCOME = Wait(None)


class Plan(Protocol):
    """The per-call state machine of a strategy."""

    attempt_timeout: float | None

    def decide(self, now: float) -> Action: ...

    def finished(
        self, index: int, verdict: Verdict, now: float, retry_after: float | None
    ) -> None: ...

    def refused(self) -> None:
        """The Send just decided could not go out (retry budget empty, breaker open).

        Send nothing more: finish with what is running or has finished.
        """


class Strategy(Protocol):
    """Configuration that makes a :class:`Plan` for each call."""

    def plan(self, *, expires_at: float, floor: float, rng: random.Random) -> Plan: ...


def _optional_seconds(value: Seconds | None, name: str) -> float | None:
    return None if value is None else to_seconds(value, name=name)


# ---------------------------------------------------------------- single


@dataclass(frozen=True, slots=True, kw_only=True)
class SingleAttempt:
    """Exactly one attempt."""

    def plan(self, *, expires_at: float, floor: float, rng: random.Random) -> Plan:
        return _SinglePlan(expires_at, floor)


class _SinglePlan:
    __slots__ = ("_done", "_expires_at", "_floor", "_refused", "_sent", "attempt_timeout")

    def __init__(self, expires_at: float, floor: float) -> None:
        self._expires_at = expires_at
        self._floor = floor
        self._sent = False
        self._done = False
        self._refused = False
        self.attempt_timeout: float | None = None

    def decide(self, now: float) -> Action:
        if self._refused:
            return Finish(None)
        if self._done:
            return Finish(0)
        if self._sent:
            return _WAIT_FOR_OUTCOME
        if self._expires_at - now < self._floor:
            return Finish(None)
        self._sent = True
        return _SEND_FIRST

    def finished(self, index: int, verdict: Verdict, now: float, retry_after: float | None) -> None:
        self._done = True

    def refused(self) -> None:
        self._refused = True


# ---------------------------------------------------------------- retry


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Sequential attempts with jittered exponential backoff.

    ``attempts`` counts the first one (3 = one try and two retries).
    ``attempt_timeout`` bounds each attempt on its own, so a stuck attempt is
    abandoned and retried while the call's deadline still leaves time.
    """

    attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    attempt_timeout: float | None = None

    def __post_init__(self) -> None:
        whole("retry attempts", self.attempts, maximum=MAX_RETRY_ATTEMPTS)
        object.__setattr__(
            self, "attempt_timeout", _optional_seconds(self.attempt_timeout, "attempt_timeout")
        )

    def plan(self, *, expires_at: float, floor: float, rng: random.Random) -> Plan:
        return _RetryPlan(self, expires_at, floor, rng)


class _RetryPlan:
    __slots__ = (
        "_config",
        "_expires_at",
        "_floor",
        "_last",
        "_last_verdict",
        "_next_at",
        "_rng",
        "_running",
        "_sent",
        "attempt_timeout",
    )

    def __init__(self, config: Retry, expires_at: float, floor: float, rng: random.Random) -> None:
        self._config = config
        self._expires_at = expires_at
        self._floor = floor
        self._rng = rng
        self._sent = 0
        self._running = False
        self._last: int | None = None
        self._last_verdict = Verdict.RETRY
        self._next_at = 0.0
        self.attempt_timeout = config.attempt_timeout

    def decide(self, now: float) -> Action:
        if self._running:
            return _WAIT_FOR_OUTCOME
        if self._sent and (
            self._last_verdict is not Verdict.RETRY or self._sent >= self._config.attempts
        ):
            return Finish(self._last)
        latest_start = self._expires_at - self._floor
        if self._next_at > latest_start or now > latest_start:
            return Finish(self._last)
        if now < self._next_at:
            return Wait(self._next_at)
        self._sent += 1
        self._running = True
        return _SEND_RETRY if self._sent > 1 else _SEND_FIRST

    def finished(self, index: int, verdict: Verdict, now: float, retry_after: float | None) -> None:
        self._running = False
        self._last = index
        self._last_verdict = verdict
        if verdict is Verdict.RETRY:
            delay = self._config.backoff.delay(self._sent - 1, self._rng)
            if retry_after is not None and retry_after > delay:
                delay = retry_after
            self._next_at = now + delay

    def refused(self) -> None:
        self._running = False
        self._sent = self._config.attempts


# ---------------------------------------------------------------- hedged


@dataclass(frozen=True, slots=True, kw_only=True)
class Hedged:
    """Parallel attempts: a new one every ``delay`` seconds until one answers.

    With ``learned`` set, the delay is learned per route from recent latencies
    (the percentile ``1 - max_extra_load``), ``delay`` serving until enough
    samples exist; hedges then also draw on a budget of ``max_extra_load``
    of the calls, so extra load cannot run away when the backend slows down.

    ``linger``: when another attempt wins, a loser is given this long to
    finish before it is cancelled. One that finishes returns its connection to
    the pool; one that is cancelled mid-response must close it (HTTP/1.1 has
    no other way to abandon a response), and a new connection replaces it.
    """

    attempts: int = 2
    delay: float = DEFAULT_HEDGE_DELAY
    attempt_timeout: float | None = None
    learned: LearnedDelayConfig | None = None
    linger: float = DEFAULT_LINGER

    def __post_init__(self) -> None:
        whole("hedged attempts", self.attempts, maximum=MAX_HEDGED_ATTEMPTS)
        object.__setattr__(self, "delay", to_seconds(self.delay, name="hedge delay"))
        object.__setattr__(
            self, "attempt_timeout", _optional_seconds(self.attempt_timeout, "attempt_timeout")
        )
        object.__setattr__(
            self, "linger", to_seconds(self.linger, name="hedge linger", allow_zero=True)
        )

    def plan(
        self, *, expires_at: float, floor: float, rng: random.Random, delay: float | None = None
    ) -> Plan:
        return _HedgedPlan(self, expires_at, floor, self.delay if delay is None else delay)


class _HedgedPlan:
    __slots__ = (
        "_config",
        "_delay",
        "_expires_at",
        "_failure_waiting",
        "_floor",
        "_last_failed",
        "_last_sent_at",
        "_not_before",
        "_running",
        "_sent",
        "_winner",
        "attempt_timeout",
    )

    def __init__(self, config: Hedged, expires_at: float, floor: float, delay: float) -> None:
        self._config = config
        self._delay = delay
        self._expires_at = expires_at
        self._floor = floor
        self._sent = 0
        self._running = 0
        self._last_sent_at = 0.0
        self._not_before = 0.0
        self._failure_waiting = False
        self._winner: int | None = None
        self._last_failed: int | None = None
        self.attempt_timeout = config.attempt_timeout

    def decide(self, now: float) -> Action:
        if self._winner is not None:
            return Finish(self._winner)
        latest_start = self._expires_at - self._floor
        can_send = self._sent < self._config.attempts and now <= latest_start
        if can_send:
            if self._sent == 0:
                return self._send(now, _SEND_FIRST)
            next_at = self._last_sent_at + self._delay
            if self._failure_waiting or not self._running:
                next_at = now
            next_at = max(next_at, self._not_before)
            if next_at <= now:
                return self._send(now, _SEND_HEDGE if self._running else _SEND_RETRY)
            if next_at <= latest_start:
                return Wait(next_at)
        if self._running:
            return _WAIT_FOR_OUTCOME
        return Finish(self._last_failed)

    def _send(self, now: float, action: Send) -> Send:
        self._sent += 1
        self._running += 1
        self._last_sent_at = now
        self._failure_waiting = False
        return action

    def finished(self, index: int, verdict: Verdict, now: float, retry_after: float | None) -> None:
        self._running -= 1
        if verdict is Verdict.RETRY:
            self._last_failed = index
            self._failure_waiting = True
            if retry_after is not None:
                self._not_before = max(self._not_before, now + retry_after)
        elif self._winner is None:
            self._winner = index

    def refused(self) -> None:
        self._running -= 1
        self._sent = self._config.attempts


# ---------------------------------------------------------------- factories

SINGLE = SingleAttempt()


def single() -> SingleAttempt:
    """One attempt, no retries: the default strategy."""
    return SINGLE


def retry(
    attempts: int = 3,
    *,
    backoff: Backoff | None = None,
    attempt_timeout: Seconds | None = None,
) -> Retry:
    """Sequential retries with jittered exponential backoff.

    >>> retry(3, attempt_timeout=0.2)   # up to 3 tries, 200 ms each, within the deadline
    Retry(attempts=3, backoff=Backoff(base=0.05, multiplier=2.0, cap=2.0, jitter=True), attempt_timeout=0.2)
    """
    return Retry(
        attempts=attempts,
        backoff=backoff or Backoff(),
        attempt_timeout=_optional_seconds(attempt_timeout, "attempt_timeout"),
    )


def hedged(
    delay: Seconds | None = None,
    *,
    max_extra_load: float | None = None,
    attempts: int | None = None,
    attempt_timeout: Seconds | None = None,
    linger: Seconds = DEFAULT_LINGER,
) -> Hedged:
    """Hedged requests: another copy when the first is slower than usual.

    ``hedged()`` learns the delay: the latency percentile ``1 - max_extra_load``
    (default 5%: the p95) of recent successful attempts on the route, so
    hedges add about that much load and a budget caps them there.
    ``hedged(0.02)`` uses a fixed 20 ms instead.

    ``attempts`` defaults to 3 with a learned delay (a hedge that lands in
    the slow tail too gets a third chance, while the hedge budget still caps
    the extra load) and to 2 with a fixed one (nothing caps it but the
    client's retry budget).

    >>> hedged(0.02, attempts=3).delay     # copies at 0, 20 and 40 ms
    0.02
    >>> hedged(max_extra_load=0.01).learned.quantile   # hedge past the p99
    0.99
    """
    if delay is not None and max_extra_load is not None:
        raise ConfigurationError("give hedged() a fixed delay or a max_extra_load, not both")
    learned = (
        None
        if delay is not None
        else LearnedDelayConfig(
            max_extra_load=DEFAULT_MAX_EXTRA_LOAD if max_extra_load is None else max_extra_load
        )
    )
    if attempts is None:
        attempts = 2 if learned is None else 3
    return Hedged(
        attempts=attempts,
        delay=DEFAULT_HEDGE_DELAY if delay is None else to_seconds(delay, name="hedge delay"),
        attempt_timeout=_optional_seconds(attempt_timeout, "attempt_timeout"),
        learned=learned,
        linger=to_seconds(linger, name="hedge linger", allow_zero=True),
    )
