"""Gradient concurrency limit: shrink as latency climbs above what the server does unloaded.

Theory of operation. Queueing shows up as latency before it shows up as
errors: while a server has spare capacity a request takes about its service
time; once requests outnumber what it can work on, the extra ones wait, and
every further admission only adds waiting. The estimator compares two
latencies:

* ``baseline``: the server's latency without a queue, the fastest round trip
  seen;
* ``recent``: a short exponential average of round trips, the latency now.

Every round trip's worth of samples (one per request the limit admits)
moves the limit a ``smoothing`` fraction of the way towards ``limit *
gradient + sqrt(limit)``, where ``gradient = tolerance * baseline / recent``
is clamped to [0.5, 1]; each sample contributes ``1 / limit`` of that step,
so the limit moves at the pace of round trips, not of arrivals. While latency
stays within ``tolerance`` of the baseline the gradient is 1 and the limit
grows by ``smoothing * sqrt(limit)`` per round trip (room to discover new
capacity); as queueing pushes latency up, the gradient drops and the limit
shrinks, by at most a tenth per round trip with the default smoothing. Until
latency first rises above ``tolerance`` times the baseline, the limit grows by
one per sample instead, doubling every round trip (TCP's slow start), so a
server far larger than ``initial`` is found in a few round trips. A dropped
request (cancelled at, or finished after, its deadline) counts as the
steepest gradient. Samples taken while less than half the limit was in use
do not change it: an idle server says nothing about how much it could take.
The equilibrium sits where ``limit * (1 - gradient) = sqrt(limit)``, that is
where latency is a little above ``tolerance`` times the baseline: the server
stays busy, and requests wait a little over ``tolerance - 1`` service times. A lower
tolerance means a shorter queue, but it must cover the service's natural
variation in latency, or ordinary slow requests read as queueing and the
limit starves the server; 1.5 (as in Netflix's Gradient2) is a safe default.

The baseline only ever falls on its own; the hard part is letting it rise
when the service itself gets slower (a slower dependency, a colder cache)
without letting a standing queue pass for the new normal, which would let the
limit, and the queue, creep up forever. So every ``baseline_window`` samples
the estimator checks whether any request in the window came within
``tolerance`` of the baseline. If none did, it *probes* (``probing`` is
true): the limiter lets low and normal priority fill only half their usual
share, which drains any queue the limit itself caused. The probe lasts a
round trip's worth of samples at the full limit (what was admitted before it
finishes) and then half a round more, whose fastest round trip becomes the
new baseline. If the latency was queueing, the probe finds the
old baseline again; if the service really slowed down, the probe measures its
new speed. (BBR's ProbeRTT phase solves the same problem the same way.) High
priority keeps its whole limit during a probe, so the probe costs only less
important work; it drains the queue as long as high-priority work alone fits
the server, which is what the limit is for anyway.

This follows the design of the gradient limits in Netflix's
concurrency-limits library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from microcall._validate import number
from microcall.server.limits import LimitEstimator, check_bounds, check_count

# Weight of a new sample in the ``recent`` latency: about the last ten
# samples, enough to smooth one odd request without hiding a trend.
_RECENT_GAIN = 0.2
_MIN_GRADIENT = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class GradientLimit:
    """An adaptive limit that needs no latency target: it learns the unloaded latency.

    ``GradientLimit()`` starts at 20 requests; ``tolerance=1.5`` lets latency
    reach 1.5 times the unloaded latency before the limit stops growing.
    """

    initial: int = 20
    minimum: int = 1
    maximum: int = 1000
    tolerance: float = 1.5
    smoothing: float = 0.2
    baseline_window: int = 500

    def __post_init__(self) -> None:
        check_bounds(self.initial, self.minimum, self.maximum)
        number("tolerance", self.tolerance, minimum=1.0)
        number("smoothing", self.smoothing, above=0.0, maximum=1.0)
        check_count(self.baseline_window, "baseline_window")

    def start(self) -> LimitEstimator:
        return GradientEstimator(self)


class GradientEstimator:
    """The live state of one server's :class:`GradientLimit`."""

    __slots__ = (
        "_config",
        "_probe_left",
        "_probe_min",
        "_recent",
        "_seen",
        "_slow_start",
        "_window_min",
        "baseline",
        "value",
    )

    def __init__(self, config: GradientLimit) -> None:
        self._config = config
        self.value = float(config.initial)
        self.baseline = math.inf  # seconds; inf until the first sample
        self._recent: float | None = None
        self._window_min = math.inf
        self._seen = 0
        self._probe_left = 0  # samples left in a probe (0: not probing)
        self._probe_min = math.inf
        self._slow_start = True

    @property
    def limit(self) -> int:
        return max(self._config.minimum, int(self.value))

    @property
    def probing(self) -> bool:
        """Whether low and normal priority should be held back to re-measure the baseline."""
        return self._probe_left > 0

    def on_sample(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        config = self._config
        recent = rtt if self._recent is None else self._recent + _RECENT_GAIN * (rtt - self._recent)
        self._recent = recent
        if self._probe_left:
            self._probe(rtt)
            return
        if rtt < self.baseline:
            self.baseline = rtt
        if self._end_of_window(rtt):
            return
        if dropped:
            gradient = _MIN_GRADIENT
        elif inflight * 2 < self.value:
            return
        elif recent <= 0.0:
            gradient = 1.0
        else:
            gradient = max(_MIN_GRADIENT, min(1.0, config.tolerance * self.baseline / recent))
        if gradient < 1.0:
            self._slow_start = False
        if self._slow_start:
            value = self.value + 1.0
        else:
            target = self.value * gradient + math.sqrt(self.value)
            value = self.value + config.smoothing * (target - self.value) / self.value
        self.value = max(float(config.minimum), min(float(config.maximum), value))

    def _end_of_window(self, rtt: float) -> bool:
        """Count the sample; at a window's end, start a probe if nothing came near the baseline."""
        if rtt < self._window_min:
            self._window_min = rtt
        self._seen += 1
        if self._seen < self._config.baseline_window:
            return False
        near = self._window_min <= self._config.tolerance * self.baseline
        self._window_min, self._seen = math.inf, 0
        if near:
            return False
        # First a round of the whole limit, in which what was admitted before
        # the probe finishes (the queue drains); then half a round, measured.
        self._probe_left = math.ceil(self.value) + _probe_round(self.value)
        self._probe_min = math.inf
        return True

    def _probe(self, rtt: float) -> None:
        self._probe_left -= 1
        if self._probe_left <= _probe_round(self.value):
            self._probe_min = min(self._probe_min, rtt)
        if self._probe_left == 0 and math.isfinite(self._probe_min):
            self.baseline = self._probe_min
            self._recent = self._probe_min


def _probe_round(limit: float) -> int:
    """Samples measured in a probe: a round trip of what half the limit admits."""
    return max(1, math.ceil(limit / 2))
