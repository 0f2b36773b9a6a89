"""Learned hedge delay: wait for the latency percentile that costs ``max_extra_load``.

Theory of operation. If a hedge is sent once an attempt has run longer than
the latency percentile ``100 * (1 - max_extra_load)`` of recent attempts, then
about ``max_extra_load`` of the calls send one (Finagle's ``maxExtraLoad``):
5% extra load hedges at the p95. The percentile is learned per route (a route
template, never a raw path) from the latencies the engine reports:

* Each route keeps a ring of ``slices`` quantile sketches (DDSketch, relative
  accuracy ``relative_accuracy``), each covering ``window / slices`` seconds
  of observations. An observation goes into the sketch of its ``now``; a
  slice older than the window is replaced, so old latencies age out after
  ``window`` seconds at most (``window - window / slices`` at least).
* Reading is cheap: ``delay`` returns a cached value. The cache is
  recomputed (the live slices merged into one sketch, the quantile read off
  it, clamped to ``[floor, ceiling]``) on the first read after
  ``refresh_every`` new observations or ``refresh_interval`` seconds, and
  never more than ten times a second, whatever the request rate.
* Until a route's window holds ``min_samples`` observations, its delay is
  ``initial``: a percentile of a handful of samples is noise.
* At most ``max_routes`` routes are kept, least recently used first out, so
  route names from the network cannot grow memory; a read never adds one.

What to observe. Report the latency of every successful attempt, and for an
attempt that lost a race and was cancelled, or timed out, the time it had
run: its true latency is at least that. Leaving the cancelled losers out
would remove exactly the slow tail that hedging cuts, the percentile would
drift down, more hedges would be sent, and the delay would feed on itself.
Fast failures (refused connections) are not latencies and are left out.

Interface for the engine (one instance per client, or per endpoint group)::

    delay = hedge_delay.delay(route, now)          # when planning the call's hedges
    hedge_delay.observe(route, latency, now)       # after each attempt, as above

The extra load is also capped by the retry budget the hedges withdraw from,
so a sudden slowdown of the whole backend (every attempt past the delay)
cannot turn into a hedging storm before the window catches up.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from ddsketch import LogCollapsingLowestDenseDDSketch

from microcall._durations import to_seconds
from microcall._validate import fraction, positive_int
from microcall.errors import ConfigurationError

# Finagle keeps a 30 s window of latencies for its backup requests; six
# slices age it out in 5 s steps.
DEFAULT_WINDOW = 30.0
DEFAULT_SLICES = 6
# Finagle never sends a backup request sooner than 1 ms.
DEFAULT_FLOOR = 0.001
# Finagle's latency histogram for backup requests tracks up to 2 s, which caps
# its delay there; a hedge sent later than that is no longer cutting a tail
# but doubling a slow backend's load, and the deadline and retries govern.
DEFAULT_CEILING = 2.0
# The same fixed delay as the plain hedged() strategy's default.
DEFAULT_INITIAL = 0.05
DEFAULT_MIN_SAMPLES = 100
DEFAULT_MAX_ROUTES = 256
# Finagle refreshes its backup delay every 3 s. Merging six sketches costs
# about half a millisecond, so we follow a change sooner but cap the rate:
# at most ten refreshes a second is at most 0.5% of a core per route.
DEFAULT_REFRESH_EVERY = 100
DEFAULT_REFRESH_INTERVAL = 1.0
MIN_REFRESH_GAP = 0.1
# 1% relative accuracy: a 10 ms percentile is known to within 0.1 ms.
DEFAULT_RELATIVE_ACCURACY = 0.01
# Bins per sketch; at 1% accuracy this spans latencies over nine decades,
# and the lowest are merged first, which only blurs quantiles we never read.
SKETCH_BIN_LIMIT = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class LearnedDelayConfig:
    """How the hedge delay is learned: the percentile, its bounds, the window."""

    max_extra_load: float = 0.05
    floor: float = DEFAULT_FLOOR
    ceiling: float = DEFAULT_CEILING
    initial: float = DEFAULT_INITIAL
    min_samples: int = DEFAULT_MIN_SAMPLES
    window: float = DEFAULT_WINDOW
    slices: int = DEFAULT_SLICES
    max_routes: int = DEFAULT_MAX_ROUTES
    refresh_every: int = DEFAULT_REFRESH_EVERY
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY

    def __post_init__(self) -> None:
        _require_fraction(self.max_extra_load, "max_extra_load")
        _require_fraction(self.relative_accuracy, "relative_accuracy")
        object.__setattr__(self, "max_extra_load", float(self.max_extra_load))
        object.__setattr__(self, "relative_accuracy", float(self.relative_accuracy))
        for name in ("floor", "ceiling", "initial", "window", "refresh_interval"):
            object.__setattr__(
                self, name, to_seconds(getattr(self, name), name=f"hedge delay {name}")
            )
        if self.floor > self.ceiling:
            raise ConfigurationError(
                f"hedge delay floor ({self.floor}) must not exceed its ceiling ({self.ceiling})"
            )
        for name in ("min_samples", "slices", "max_routes", "refresh_every"):
            positive_int(name, getattr(self, name))

    @property
    def quantile(self) -> float:
        """The latency quantile the delay tracks: ``1 - max_extra_load``."""
        return 1.0 - self.max_extra_load


def _require_fraction(value: object, name: str) -> None:
    fraction(name, value)


class _RouteWindow:
    """One route's ring of sketches and its cached delay."""

    __slots__ = ("cached", "epochs", "fresh_at", "newest", "pending", "sketches")

    def __init__(self, config: LearnedDelayConfig) -> None:
        self.sketches: list[LogCollapsingLowestDenseDDSketch | None] = [None] * config.slices
        self.epochs = [0] * config.slices
        self.cached = config.initial
        self.newest = -(2**62)
        self.pending = 0
        # -inf: the first read refreshes whatever its now.
        self.fresh_at = -math.inf


class LearnedDelay:
    """Per-route hedge delays learned from recent latencies.

    >>> learned = LearnedDelay(LearnedDelayConfig(min_samples=20))
    >>> for i in range(100):
    ...     learned.observe("GET /books/{id}", 0.001 * (i + 1), now=0.0)
    >>> round(learned.delay("GET /books/{id}", now=0.0), 3)   # the p95 of 1..100 ms
    0.095
    """

    __slots__ = ("_routes", "_slice_width", "config")

    def __init__(self, config: LearnedDelayConfig | None = None) -> None:
        self.config = config or LearnedDelayConfig()
        self._slice_width = self.config.window / self.config.slices
        self._routes: OrderedDict[str, _RouteWindow] = OrderedDict()

    def __len__(self) -> int:
        """The number of routes currently remembered."""
        return len(self._routes)

    def observe(self, route: str, latency: float, now: float) -> None:
        """Record one attempt's latency (seconds) on ``route`` at time ``now``."""
        if not math.isfinite(latency):
            return
        window = self._routes.get(route)
        if window is None:
            window = _RouteWindow(self.config)
            self._routes[route] = window
            if len(self._routes) > self.config.max_routes:
                self._routes.popitem(last=False)
        else:
            self._routes.move_to_end(route)
        epoch = math.floor(now / self._slice_width)
        if epoch < window.newest:
            # A now from the past (read before another one) counts in the
            # newest slice: time never moves the ring backwards.
            epoch = window.newest
        window.newest = epoch
        index = epoch % self.config.slices
        sketch = window.sketches[index]
        if sketch is None or window.epochs[index] != epoch:
            sketch = LogCollapsingLowestDenseDDSketch(
                relative_accuracy=self.config.relative_accuracy, bin_limit=SKETCH_BIN_LIMIT
            )
            window.sketches[index] = sketch
            window.epochs[index] = epoch
        sketch.add(max(latency, 0.0))
        window.pending += 1

    def delay(self, route: str, now: float) -> float:
        """The hedge delay for ``route`` at ``now``: learned, or ``initial`` while unknown."""
        window = self._routes.get(route)
        if window is None:
            return self.config.initial
        self._routes.move_to_end(route)
        config = self.config
        since = now - window.fresh_at
        if since >= config.refresh_interval or (
            window.pending >= config.refresh_every and since >= MIN_REFRESH_GAP
        ):
            self._refresh(window, now)
        return window.cached

    def samples(self, route: str, now: float) -> int:
        """How many observations of ``route`` are inside the window at ``now``."""
        window = self._routes.get(route)
        if window is None:
            return 0
        merged = self._merge(window, now)
        return 0 if merged is None else round(merged.num_values)

    def _refresh(self, window: _RouteWindow, now: float) -> None:
        config = self.config
        merged = self._merge(window, now)
        count = 0 if merged is None else round(merged.num_values)
        value = None if merged is None else merged.get_quantile_value(config.quantile)
        if value is None or count < config.min_samples:
            window.cached = config.initial
        else:
            window.cached = min(max(value, config.floor), config.ceiling)
        window.pending = 0
        window.fresh_at = now

    def _merge(self, window: _RouteWindow, now: float) -> LogCollapsingLowestDenseDDSketch | None:
        oldest = math.floor(now / self._slice_width) - self.config.slices + 1
        merged: LogCollapsingLowestDenseDDSketch | None = None
        for epoch, sketch in zip(window.epochs, window.sketches, strict=True):
            if sketch is None or epoch < oldest:
                continue
            if merged is None:
                merged = LogCollapsingLowestDenseDDSketch(
                    relative_accuracy=self.config.relative_accuracy, bin_limit=SKETCH_BIN_LIMIT
                )
            merged.merge(sketch)
        return merged
