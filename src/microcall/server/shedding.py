"""Priority load shedding: a concurrency limit that lends idle capacity and refuses low priority first.

Theory of operation. A server works on about ``limit`` requests at once (the
limit is static or adaptive, see :mod:`microcall.server.limits`). Each
priority is guaranteed a share of it, counting only requests at least as
important as itself: with the default shares, high is guaranteed the whole
limit whatever the others hold, normal and high together 80%, and low half.
A request of priority *p* is admitted when either holds:

1. *Borrowing*: fewer than ``limit`` requests are in flight. Capacity nobody
   is using goes to whoever asks, whatever its priority, so low-only traffic
   keeps the whole limit busy. A request admitted so while its priority was
   at or over its guarantee holds a *lent* slot (``limiter.lent`` counts them).
2. *Guarantee*: the requests in flight of priority *p* or higher are under
   *p*'s share, and fewer than ``MAX_OVERRUN x limit`` are in flight in all.
   What lower priorities hold does not count against *p*: they are borrowers.

So when the limit is full, a newcomer over its guarantee is refused, and a
more important one under its own gets in at once, above the limit if it
must. A refusal is also a sign that a priority wants more than it holds:
for the Retry-After a refusal sends (one second by default) after a high
request was refused, normal and low may not borrow, and after a normal one,
low may not. The slots that free up in the meantime go to the refused
priority when it asks again (its callers are told to come back after
Retry-After), so under contention low absorbs the shedding, while low-only
traffic, refused only by itself, still borrows the whole limit.

Nothing is revoked: the server runs over its limit only while lower
priorities still hold what they borrowed, and since nobody borrows while the
limit is full, that lasts one request's latency. In a steady mix the excess
is the swing of the important priorities' own demand; it is never more than
the limit again (``MAX_OVERRUN``). Netflix's concurrency-limits partitions a
limit the same way (a guaranteed percentage per partition, admitted beyond
the limit while under it, idle capacity lent to all); priorities nest the
partitions, so that a more important request never waits on a lesser one.

The sizing rule that follows: high priority is refused only once high alone
holds the whole limit (or the server holds twice it). Size the limit above
high's own offered concurrency (its rate times its latency at the server),
with margin for its bursts, and high priority is not shed (docs/server.md
gives the numbers).

An adaptive limit may ask to *probe*: re-measure how fast the server is
without a queue (see :mod:`microcall.server.gradient`). While it does, low
and normal priority may not borrow, and fill at most half their share of the
whole in-flight count; high keeps its own guarantee.

The limiter works without queues or timers: admission is a few comparisons
and counters under a lock, so a refusal costs next to nothing and no handler
runs for it. When a request finishes, its round-trip time (and whether it
missed its deadline) is a sample for an adaptive limit; the clock that times
it is injected, so tests drive the whole thing with a FakeClock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from microcall._clock import MONOTONIC, Clock
from microcall._validate import number, positive_int
from microcall.errors import ConfigurationError, UsageError
from microcall.priority import Priority
from microcall.server.limits import ConcurrencyLimit, LimitEstimator

# Guaranteed shares, counting a priority with those above it: normal and high
# together are guaranteed 80% of the limit whatever low has borrowed, and low
# half of it while it competes with nobody but itself (it can always borrow
# the rest when idle). Netflix's concurrency-limits partitions a limit the
# same way: each part a guaranteed percentage, idle capacity lent to all.
DEFAULT_LOW_SHARE = 0.5
DEFAULT_NORMAL_SHARE = 0.8

# While an adaptive limit probes (re-measures the server's unloaded latency),
# low and normal priority may not borrow and fill half their usual share, so
# the queue drains.
PROBE_SHARE = 0.5

# A request admitted by its guarantee may take the server over its limit
# while lower priorities hold borrowed slots, but never past twice it: a bound
# on the queue an overrun can build, whatever the shares.
MAX_OVERRUN = 2

# Retry-After on a refusal, in whole seconds (the header's delay-seconds form):
# long enough for a burst to pass, short enough to fit a typical deadline.
DEFAULT_RETRY_AFTER = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityShares:
    """The fraction of the limit guaranteed to each priority together with those above it.

    High is guaranteed the whole limit. Any priority may also borrow what
    nobody is using (see the module's theory of operation).
    """

    low: float = DEFAULT_LOW_SHARE
    normal: float = DEFAULT_NORMAL_SHARE

    def __post_init__(self) -> None:
        for name, value in (("low", self.low), ("normal", self.normal)):
            number(f"the {name} share", value, above=0.0, maximum=1.0)
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
        if not isinstance(self.shares, PriorityShares):
            raise ConfigurationError(f"shares must be a PriorityShares, got {self.shares!r}")
        positive_int("retry_after", self.retry_after, what="whole seconds")

    def new_limiter(self, clock: Clock = MONOTONIC) -> PriorityLimiter:
        """A limiter with its own state: one per server."""
        return PriorityLimiter(
            self.limit.start(), shares=self.shares, yield_window=self.retry_after, clock=clock
        )


class PriorityLimiter:
    """Admits or refuses requests by priority against a concurrency limit (thread-safe).

    ``permit = limiter.try_acquire(priority)`` is None when the request must
    be refused; otherwise call ``permit.release()`` when it finishes (or
    ``permit.discard()`` if it failed in a way that says nothing about load).
    """

    __slots__ = (
        "_clock",
        "_estimator",
        "_high",
        "_high_refused_at",
        "_inflight",
        "_lent",
        "_lock",
        "_normal",
        "_normal_refused_at",
        "_shares",
        "_yield_window",
    )

    def __init__(
        self,
        estimator: LimitEstimator,
        *,
        shares: PriorityShares,
        yield_window: float = DEFAULT_RETRY_AFTER,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._estimator = estimator
        self._shares = shares
        # How long a priority may not borrow after a more important request
        # was refused: the Retry-After, when the refused callers come back
        # for the slots kept from the borrowers.
        self._yield_window = number("yield_window", yield_window, minimum=0.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight = 0  # every priority
        self._high = 0
        self._normal = 0
        self._lent = 0  # admitted by borrowing beyond their priority's guarantee
        # When a high and a normal request were last refused (the less
        # important priorities then yield: see the theory).
        self._high_refused_at = -math.inf
        self._normal_refused_at = -math.inf

    @property
    def limit(self) -> int:
        """The current limit (changes over time for an adaptive one)."""
        return self._estimator.limit

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet finished."""
        return self._inflight

    @property
    def lent(self) -> int:
        """Requests in flight on borrowed capacity, beyond their priority's guarantee."""
        return self._lent

    def inflight_at_least(self, priority: Priority) -> int:
        """Requests in flight of ``priority`` or higher."""
        if priority is Priority.HIGH:
            return self._high
        if priority is Priority.NORMAL:
            return self._high + self._normal
        return self._inflight

    def capacity(self, priority: Priority) -> int:
        """The guarantee: requests of ``priority`` or higher that may be in flight, borrowing aside."""
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
        if now is None:
            now = self._clock.now()
        with self._lock:
            lent = self._admits(priority, now)
            if lent is None:
                if priority is Priority.HIGH:
                    self._high_refused_at = now
                elif priority is Priority.NORMAL:
                    self._normal_refused_at = now
                return None
            if lent:
                self._lent += 1
            self._inflight += 1
            if priority is Priority.HIGH:
                self._high += 1
            elif priority is Priority.NORMAL:
                self._normal += 1
            inflight = self._inflight
        return Permit(self, now, inflight, priority, lent)

    def _admits(self, priority: Priority, now: float) -> bool | None:
        """None: refuse; otherwise whether the slot is lent (see the theory). Under the lock."""
        estimator = self._estimator
        inflight = self._inflight
        if estimator.probing and priority is not Priority.HIGH:
            # No borrowing while the limit re-measures: the queue must drain.
            return False if inflight < self.capacity(priority) else None
        guaranteed = self.inflight_at_least(priority) < self.capacity(priority)
        if guaranteed and inflight < MAX_OVERRUN * estimator.limit:
            return False
        if inflight < estimator.limit and not self._yields(priority, now):
            return True  # idle capacity, lent to a priority over its guarantee
        return None

    def _yields(self, priority: Priority, now: float) -> bool:
        """Whether a more important request was refused too recently for ``priority`` to borrow."""
        if priority is Priority.HIGH:
            return False
        since = self._high_refused_at
        if priority is Priority.LOW:
            since = max(since, self._normal_refused_at)
        return now - since < self._yield_window

    def _finish(self, permit: Permit, sample: bool, dropped: bool) -> None:
        now = self._clock.now()
        priority = permit.priority
        with self._lock:
            self._inflight -= 1
            if permit.lent:
                self._lent -= 1
            if priority is Priority.HIGH:
                self._high -= 1
            elif priority is Priority.NORMAL:
                self._normal -= 1
            if sample:
                self._estimator.on_sample(
                    now=now, rtt=now - permit.started, inflight=permit.inflight, dropped=dropped
                )


class Permit:
    """One admitted request's hold on the limit; release it exactly once."""

    __slots__ = ("_limiter", "inflight", "lent", "priority", "released", "started")

    def __init__(
        self,
        limiter: PriorityLimiter,
        started: float,
        inflight: int,
        priority: Priority,
        lent: bool = False,
    ) -> None:
        self._limiter = limiter
        self.started = started
        self.inflight = inflight
        self.priority = priority
        self.lent = lent  # borrowed capacity, beyond its priority's guarantee
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
