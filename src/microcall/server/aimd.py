"""AIMD concurrency limit: additive increase, multiplicative decrease, as TCP does.

Theory of operation. The estimator holds a real-valued limit. Each finished
request is a sample:

* *Overloaded* (the request was dropped, i.e. cancelled at or finished after
  its deadline, or took longer than ``latency_target`` when one is set): the
  limit is multiplied by ``backoff_ratio``, at most once per round trip. A
  burst of slow samples describes one congestion event, and cutting for each
  of them would collapse the limit to its minimum; so after a cut, further
  overload samples are ignored until a smoothed round-trip time has passed.
* *Fine, and the limit was in use* (at least half of it in flight when the
  request started): the limit grows by ``increase / limit``, that is by
  ``increase`` per round trip's worth of samples. Until the first sign of
  overload it grows by one per sample instead, doubling every round trip
  (TCP's slow start), so a server whose capacity is far above ``initial``
  finds it in a few round trips rather than a few hundred.
* *Fine, but the server was mostly idle*: nothing changes. Growing the limit
  without evidence that it is being used would let it drift far above what
  the server can handle, and the first burst would pay for it.

The limit stays within [minimum, maximum]; what the server enforces is its
floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from microcall._durations import Seconds, to_seconds
from microcall._validate import number
from microcall.server.limits import LimitEstimator, check_bounds

# Weight of a new sample in the smoothed round-trip time, as in TCP's SRTT
# estimator (RFC 6298).
_SRTT_GAIN = 0.125


@dataclass(frozen=True, slots=True, kw_only=True)
class AIMDLimit:
    """An adaptive limit that backs off when requests miss their deadline (or a latency target).

    ``AIMDLimit(initial=20, latency_target=0.25)``: start at 20, shrink by 10%
    when a request takes over 250 ms or misses its deadline, grow by one per
    round trip while the server is busy and requests are fast.
    """

    initial: int = 20
    minimum: int = 1
    maximum: int = 1000
    # Netflix's AIMDLimit uses 0.9: gentle enough that one congestion event
    # does not halve capacity, firm enough to clear a queue in a few rounds.
    backoff_ratio: float = 0.9
    increase: float = 1.0
    latency_target: Seconds | None = None

    def __post_init__(self) -> None:
        check_bounds(self.initial, self.minimum, self.maximum)
        number("backoff_ratio", self.backoff_ratio, above=0.0, below=1.0)
        number("increase", self.increase, above=0.0)
        if self.latency_target is not None:
            target = to_seconds(self.latency_target, name="latency_target")
            object.__setattr__(self, "latency_target", target)

    def start(self) -> LimitEstimator:
        return AIMDEstimator(self)


class AIMDEstimator:
    """The live state of one server's :class:`AIMDLimit`."""

    __slots__ = ("_config", "_hold_until", "_slow_start", "_srtt", "_target", "value")

    probing = False  # an AIMD limit never needs to re-measure anything

    def __init__(self, config: AIMDLimit) -> None:
        self._config = config
        target = config.latency_target
        self._target = None if target is None else to_seconds(target, name="latency_target")
        self.value = float(config.initial)
        self._srtt: float | None = None
        self._hold_until = -math.inf
        self._slow_start = True

    @property
    def limit(self) -> int:
        return max(self._config.minimum, int(self.value))

    def on_sample(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        srtt = rtt if self._srtt is None else self._srtt + _SRTT_GAIN * (rtt - self._srtt)
        self._srtt = srtt
        config = self._config
        overloaded = dropped or (self._target is not None and rtt > self._target)
        if overloaded:
            self._slow_start = False
            if now >= self._hold_until:
                self.value = max(float(config.minimum), self.value * config.backoff_ratio)
                self._hold_until = now + srtt
            return
        if inflight * 2 >= self.value:
            step = 1.0 if self._slow_start else config.increase / self.value
            self.value = min(float(config.maximum), self.value + step)
