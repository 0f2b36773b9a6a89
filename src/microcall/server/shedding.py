"""Priority load shedding: a concurrency limit that refuses low priority first.

Theory of operation. A server works on at most ``limit`` requests at once
(the limit is static or adaptive, see :mod:`microcall.server.limits`). Each
priority may fill only a share of it: with the default shares, a low-priority
request is admitted only while fewer than half of the limit are in flight, a
normal one while fewer than 80%, a high one up to the whole limit. As load
rises, low priority is refused first, then normal; high priority keeps the top
of the limit to itself, so it is refused last and only when the server is full
of work that is at least as important.

An adaptive limit may ask to *probe*: re-measure how fast the server is
without a queue (see :mod:`microcall.server.gradient`). While it does, low
and normal priority may fill only half their share; high keeps its own.

The reserve works without queues or timers: admission is a comparison and a
counter under a lock, so a refusal costs next to nothing and no handler runs
for it. When a request finishes, its round-trip time (and whether it missed
its deadline) is a sample for an adaptive limit; the clock that times it is
injected, so tests drive the whole thing with a FakeClock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from microcall._clock import MONOTONIC, Clock
from microcall.errors import ConfigurationError, UsageError
from microcall.priority import Priority
from microcall.server.limits import ConcurrencyLimit, LimitEstimator

# A low-priority request may use half of the limit and a normal one 80%: the
# top 20% is always kept for high priority, and normal traffic keeps 30% of
# the limit that low priority can never take from it.
DEFAULT_LOW_SHARE = 0.5
DEFAULT_NORMAL_SHARE = 0.8

# While an adaptive limit probes (re-measures the server's unloaded latency),
# low and normal priority may fill half their usual share, so the queue drains.
PROBE_SHARE = 0.5

# Retry-After on a refusal, in whole seconds (the header's delay-seconds form):
# long enough for a burst to pass, short enough to fit a typical deadline.
DEFAULT_RETRY_AFTER = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityShares:
    """The fraction of the limit each priority may fill; high may always fill all of it."""

    low: float = DEFAULT_LOW_SHARE
    normal: float = DEFAULT_NORMAL_SHARE

    def __post_init__(self) -> None:
        for name, value in (("low", self.low), ("normal", self.normal)):
            if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ConfigurationError(f"the {name} share must be in (0, 1], got {value!r}")
        if self.low > self.normal:
            raise ConfigurationError(
                f"the low share ({self.low}) cannot exceed the normal share ({self.normal})"
            )

    def of(self, priority: Priority) -> float:
        if priority is Priority.LOW:
            return self.low
        if priority is Priority.NORMAL:
            return self.normal
        return 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Shedding:
    """Load shedding for one server: a limit, the priorities' shares, the Retry-After to send.

    ::

        Shedding(limit=StaticLimit(limit=64))
        Shedding(limit=AIMDLimit(latency_target=0.2), shares=PriorityShares(low=0.3))
    """

    limit: ConcurrencyLimit
    shares: PriorityShares = field(default_factory=PriorityShares)
    retry_after: int = DEFAULT_RETRY_AFTER

    def __post_init__(self) -> None:
        if not callable(getattr(self.limit, "start", None)):
            raise ConfigurationError(
                f"limit must be a StaticLimit, AIMDLimit or GradientLimit, got {self.limit!r}"
            )
        if isinstance(self.retry_after, bool) or not isinstance(self.retry_after, int):
            raise ConfigurationError(f"retry_after must be whole seconds, got {self.retry_after!r}")
        if self.retry_after < 1:
            raise ConfigurationError(f"retry_after must be >= 1 second, got {self.retry_after}")

    def new_limiter(self, clock: Clock = MONOTONIC) -> PriorityLimiter:
        """A limiter with its own state: one per server."""
        return PriorityLimiter(self.limit.start(), shares=self.shares, clock=clock)


class PriorityLimiter:
    """Admits or refuses requests by priority against a concurrency limit (thread-safe).

    ``permit = limiter.try_acquire(priority)`` is None when the request must
    be refused; otherwise call ``permit.release()`` when it finishes (or
    ``permit.discard()`` if it failed in a way that says nothing about load).
    """

    __slots__ = ("_clock", "_estimator", "_inflight", "_lock", "_shares")

    def __init__(
        self, estimator: LimitEstimator, *, shares: PriorityShares, clock: Clock = MONOTONIC
    ) -> None:
        self._estimator = estimator
        self._shares = shares
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight = 0

    @property
    def limit(self) -> int:
        """The current limit (changes over time for an adaptive one)."""
        return self._estimator.limit

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet finished."""
        return self._inflight

    def capacity(self, priority: Priority) -> int:
        """How many requests may be in flight when one of ``priority`` is admitted."""
        estimator = self._estimator
        share = self._shares.of(priority)
        if estimator.probing and priority is not Priority.HIGH:
            share *= PROBE_SHARE
        # At least one: a tiny limit has no room for a reserve, and an idle
        # server must not refuse a request of any priority.
        return max(1, math.floor(estimator.limit * share))

    def try_acquire(self, priority: Priority, *, now: float | None = None) -> Permit | None:
        """A permit to run the request now, or None: refuse it.

        ``now`` saves a clock read when the caller has just made one.
        """
        with self._lock:
            if self._inflight >= self.capacity(priority):
                return None
            self._inflight += 1
            inflight = self._inflight
        return Permit(self, self._clock.now() if now is None else now, inflight)

    def _finish(self, permit: Permit, sample: bool, dropped: bool) -> None:
        now = self._clock.now()
        with self._lock:
            self._inflight -= 1
            if sample:
                self._estimator.on_sample(
                    now=now, rtt=now - permit.started, inflight=permit.inflight, dropped=dropped
                )


class Permit:
    """One admitted request's hold on the limit; release it exactly once."""

    __slots__ = ("_limiter", "inflight", "released", "started")

    def __init__(self, limiter: PriorityLimiter, started: float, inflight: int) -> None:
        self._limiter = limiter
        self.started = started
        self.inflight = inflight
        self.released = False

    def release(self, *, dropped: bool = False) -> None:
        """The request finished: free its slot and report how long it took.

        ``dropped``: it was cancelled at, or finished after, its deadline.
        """
        self._done()
        self._limiter._finish(self, True, dropped)

    def discard(self) -> None:
        """Free the slot without a sample (the handler failed; its time says nothing)."""
        self._done()
        self._limiter._finish(self, False, False)

    def _done(self) -> None:
        if self.released:
            raise UsageError("a permit was released twice")
        self.released = True
