"""Gradient concurrency limit: shrink as latency climbs above what the server does unloaded.

Theory of operation. Queueing shows up as latency before it shows up as
errors: while a server has spare capacity a request takes about its service
time; once requests outnumber what it can work on, the extra ones wait, and
every further admission only adds waiting. The estimator compares two
latencies:

* ``baseline``: the server's latency without a queue, the fastest round trip
  seen;
* ``recent``: a short exponential average of round trips, the latency now.

Each sample moves the limit a ``smoothing`` fraction of the way towards
``limit * gradient + sqrt(limit)``, where ``gradient = tolerance * baseline /
recent`` is clamped to [0.5, 1]. While latency stays within ``tolerance`` of
the baseline the gradient is 1 and the limit grows by ``smoothing *
sqrt(limit)`` per sample (room to discover new capacity); as queueing pushes
latency up, the gradient drops and the limit shrinks. The target is never
below half the limit, so one outlier cannot empty the server. A dropped
request (cancelled at, or finished after, its deadline) counts as the
steepest gradient. Samples taken while less than half the limit was in use
do not change it: an idle server says nothing about how much it could take.
The equilibrium sits where ``limit * (1 - gradient) = sqrt(limit)``: a small
queue, proportionate to the limit, that keeps the server busy without
letting waiting time grow.

The baseline only ever falls on its own; the hard part is letting it rise
when the service itself gets slower (a slower dependency, a colder cache)
without letting a standing queue pass for the new normal, which would let the
limit, and the queue, creep up forever. So every ``baseline_window`` samples
the estimator checks whether any request in the window came within
``tolerance`` of the baseline. If none did, it *probes*: for two rounds it
admits only half the limit, which drains any queue the limit itself caused,
and takes the fastest round trip of the second round as the new baseline.
If the latency was queueing, the probe finds the old baseline again; if the
service really slowed down, the probe measures its new speed. (BBR's
ProbeRTT phase solves the same problem the same way.)

This follows the design of the gradient limits in Netflix's
concurrency-limits library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from microcall.errors import ConfigurationError
from microcall.server.limits import LimitEstimator, check_bounds, check_count

# Weight of a new sample in the ``recent`` latency: about the last ten
# samples, enough to smooth one odd request without hiding a trend.
_RECENT_GAIN = 0.2
_MIN_GRADIENT = 0.5
# While probing, the limit is halved: enough to drain a queue the limit
# caused, short of starving a server that is only a little over capacity.
_PROBE_SHARE = 0.5


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
        if not (math.isfinite(self.tolerance) and self.tolerance >= 1.0):
            raise ConfigurationError(f"tolerance must be >= 1, got {self.tolerance!r}")
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigurationError(f"smoothing must be in (0, 1], got {self.smoothing!r}")
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

    @property
    def limit(self) -> int:
        value = self.value * _PROBE_SHARE if self._probe_left else self.value
        return max(self._config.minimum, int(value))

    @property
    def probing(self) -> bool:
        """Whether the limit is halved to re-measure the unloaded latency."""
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
        target = self.value * gradient + math.sqrt(self.value)
        value = self.value + config.smoothing * (target - self.value)
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
        # Two rounds at half the limit: the first drains what was admitted at
        # the full limit, the second measures.
        self._probe_left = 2 * max(1, math.ceil(self.value * _PROBE_SHARE))
        self._probe_min = math.inf
        return True

    def _probe(self, rtt: float) -> None:
        self._probe_left -= 1
        if self._probe_left < math.ceil(self.value * _PROBE_SHARE):
            self._probe_min = min(self._probe_min, rtt)
        if self._probe_left == 0 and math.isfinite(self._probe_min):
            self.baseline = self._probe_min
            self._recent = self._probe_min
