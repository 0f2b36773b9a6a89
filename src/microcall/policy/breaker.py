"""Circuit breaker per endpoint: stop sending to an endpoint that mostly fails.

Theory of operation. Three states and four transitions::

             failure ratio >= failure_threshold, with >= minimum_throughput
    CLOSED ──────────────────────────────────────────────────────────► OPEN
      ▲                                                               │  ▲
      │ a probe succeeds                        break_duration passed │  │ a probe fails
      │                                                               ▼  │
      └─────────────────────────────────────────────────────────── HALF_OPEN

* CLOSED: every attempt is allowed; outcomes are counted in a sliding window
  of ``sampling_duration`` (ten buckets). After a failure, if the window holds
  at least ``minimum_throughput`` outcomes and the failing fraction is at
  least ``failure_threshold``, the breaker opens. Below the minimum a few
  failures of a quiet endpoint prove nothing, so it stays closed.
* OPEN: every attempt is refused (the engine fails fast with CircuitOpen,
  without touching the network) for ``break_duration`` seconds. Outcomes of
  attempts allowed before opening are ignored.
* HALF_OPEN: up to ``half_open_probes`` attempts at a time are let through as
  probes. The first success closes the breaker with an empty window; the
  first failure opens it again for another ``break_duration``.

Nothing here reads the clock: time-driven transitions (OPEN to HALF_OPEN)
happen when the next call passes a ``now`` past the break; the state change
is reported with the time the break ended. CLOSED never goes straight to
HALF_OPEN, and every state change is one of the four arrows above.

Interface for the engine (one breaker per endpoint)::

    if not breaker.allow(now): raise CircuitOpen  # before an attempt (takes a probe slot)
    breaker.record(success, now)                  # after it, exactly once per allow()
    breaker.release(now)                          # instead of record() for a cancelled attempt

``breaker.available(now)`` answers whether ``allow`` would admit an attempt
without taking a probe slot: the balancer uses it to skip open endpoints.
State changes are :class:`BreakerStateChange` events passed to every callable
in ``breaker.listeners`` (pass one list to all of a client's breakers so a
metrics or logging hook subscribes once); a listener must not raise, as its
exception reaches the caller of ``allow``/``record``. A probe whose outcome
never arrives (neither ``record`` nor ``release``) frees its slot after
``break_duration``, so a lost probe cannot hold the breaker half-open for ever.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from microcall._durations import to_seconds
from microcall._validate import number, positive_int
from microcall.policy._window import SlidingCount

# Defaults: half failing means the endpoint is broken, not flaky; ten outcomes
# over ten seconds is enough evidence for a service with modest traffic; five
# seconds of break is the default of Polly, whose breaker has these same four
# parameters; one probe at a time risks the least on an endpoint still down.
DEFAULT_FAILURE_THRESHOLD = 0.5
DEFAULT_MINIMUM_THROUGHPUT = 10
DEFAULT_SAMPLING_DURATION = 10.0
DEFAULT_BREAK_DURATION = 5.0
DEFAULT_HALF_OPEN_PROBES = 1

# Same resolution argument as the retry budget's window: a tenth of the
# sampling duration is finer than any decision made on it.
WINDOW_BUCKETS = 10


class BreakerState(enum.StrEnum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerStateChange:
    """An event: ``endpoint``'s breaker went from ``old`` to ``new`` at time ``at``."""

    endpoint: str
    old: BreakerState
    new: BreakerState
    at: float


BreakerListener = Callable[[BreakerStateChange], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerConfig:
    """When a breaker opens and how it recovers (parameter names as in aio-request).

    ``failure_threshold`` is a ratio in (0, 1]: the breaker opens when at least
    this fraction of the outcomes in the last ``sampling_duration`` seconds
    failed, and there were at least ``minimum_throughput`` of them.
    """

    failure_threshold: float = DEFAULT_FAILURE_THRESHOLD
    minimum_throughput: int = DEFAULT_MINIMUM_THROUGHPUT
    sampling_duration: float = DEFAULT_SAMPLING_DURATION
    break_duration: float = DEFAULT_BREAK_DURATION
    half_open_probes: int = DEFAULT_HALF_OPEN_PROBES

    def __post_init__(self) -> None:
        threshold = number(
            "failure_threshold", self.failure_threshold, above=0, maximum=1, what="a ratio"
        )
        object.__setattr__(self, "failure_threshold", threshold)
        positive_int("minimum_throughput", self.minimum_throughput)
        positive_int("half_open_probes", self.half_open_probes)
        object.__setattr__(
            self,
            "sampling_duration",
            to_seconds(self.sampling_duration, name="sampling_duration"),
        )
        object.__setattr__(
            self, "break_duration", to_seconds(self.break_duration, name="break_duration")
        )


class CircuitBreaker:
    """The breaker of one endpoint: ``allow`` before an attempt, ``record`` after it."""

    __slots__ = (
        "_failures",
        "_last_probe_at",
        "_open_until",
        "_probes",
        "_state",
        "_totals",
        "config",
        "endpoint",
        "listeners",
        "rejected",
    )

    def __init__(
        self,
        endpoint: str,
        config: CircuitBreakerConfig | None = None,
        *,
        listeners: list[BreakerListener] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.config = config or CircuitBreakerConfig()
        # The caller's list itself, not a copy: subscribers added later are heard.
        self.listeners: list[BreakerListener] = listeners if listeners is not None else []
        self.rejected = 0
        """Attempts ever refused (failed fast) by this breaker."""
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._probes = 0
        self._last_probe_at = 0.0
        self._totals = SlidingCount(self.config.sampling_duration, WINDOW_BUCKETS)
        self._failures = SlidingCount(self.config.sampling_duration, WINDOW_BUCKETS)

    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (an open breaker whose break is over is half-open)."""
        self._tick(now)
        return self._state

    def available(self, now: float) -> bool:
        """Whether ``allow(now)`` would admit an attempt; takes no probe slot."""
        self._tick(now)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        return self._probes < self.config.half_open_probes

    def allow(self, now: float) -> bool:
        """Admit an attempt (True) or refuse it (False: fail fast with CircuitOpen)."""
        self._tick(now)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN and self._probes < self.config.half_open_probes:
            self._probes += 1
            self._last_probe_at = now
            return True
        self.rejected += 1
        return False

    def record(self, success: bool, now: float) -> None:
        """Report the outcome of an attempt that ``allow`` admitted."""
        self._tick(now)
        state = self._state
        if state is BreakerState.CLOSED:
            self._count(success, now)
            if not success and self._tripped(now):
                self._open(now)
        elif state is BreakerState.HALF_OPEN:
            self._probes = max(self._probes - 1, 0)
            if success:
                self._clear_window()
                self._change(BreakerState.CLOSED, now)
            else:
                self._open(now)
        # OPEN: a late outcome of an attempt admitted before the breaker opened
        # says nothing about the endpoint now.

    def release(self, now: float) -> None:
        """Give back an admitted attempt that ended without an outcome (cancelled)."""
        self._tick(now)
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(self._probes - 1, 0)

    # ---------------------------------------------------------------- internals

    def _tick(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._probes = 0
            self._change(BreakerState.HALF_OPEN, self._open_until)
        elif (
            self._state is BreakerState.HALF_OPEN
            and self._probes >= self.config.half_open_probes
            and now - self._last_probe_at >= self.config.break_duration
        ):
            # Probes that never reported are presumed lost: let new ones through.
            self._probes = 0

    def _open(self, now: float) -> None:
        self._open_until = now + self.config.break_duration
        self._probes = 0
        self._change(BreakerState.OPEN, now)

    def _change(self, new: BreakerState, at: float) -> None:
        old = self._state
        self._state = new
        event = BreakerStateChange(self.endpoint, old, new, at)
        for listener in self.listeners:
            listener(event)

    def _tripped(self, now: float) -> bool:
        total = self._totals.total(now)
        return (
            total >= self.config.minimum_throughput
            and self._failures.total(now) >= self.config.failure_threshold * total
        )

    def _count(self, success: bool, now: float) -> None:
        self._totals.add(now)
        if not success:
            self._failures.add(now)

    def _clear_window(self) -> None:
        self._totals.clear()
        self._failures.clear()
