"""Outlier ejection: take an endpoint that keeps failing out of rotation for a while.

Theory of operation (Envoy's outlier detection, consecutive-failure kind).
Each endpoint of a group counts its consecutive failures; a success resets
the count. At ``consecutive_failures`` in a row the endpoint is ejected:
the balancer skips it until ``base_ejection_time x n`` seconds have passed,
where ``n`` is how many times it has been ejected, capped at
``max_ejection_time``: 30 s, 60 s, 90 s, ... 300 s with Envoy's defaults.
When the time is up it returns with a clean count. Every ``interval`` of
healthy time after its return lowers ``n`` by one, so an endpoint that failed
once long ago starts again from the base time.

Limits. Ejection protects callers from one bad replica; it must not turn a
general outage into no endpoints at all. So:

* at most ``max_ejection_percent`` of the group is ejected at once, rounded
  down, but at least one endpoint when there are two or more (Envoy ejects
  at least one host whatever the percentage; with three replicas 10% would
  otherwise mean never); ``max_ejection_percent=0`` turns ejection off;
* never every endpoint: a group of one never ejects, and a group of ``n``
  ejects at most ``n - 1``.

An endpoint that reaches the threshold while the limit is full stays
unejected, keeps its count, and is ejected at its next failure once there is
room. Outcomes reported while an endpoint is ejected (late answers from
attempts sent before) do not extend its ejection.

Interface for the engine (one detector per endpoint group)::

    detector.record(address, success, now)   # after every attempt with an outcome
    detector.is_ejected(address, now)        # the balancer asks this
    detector.update(addresses, now)          # after re-resolving the group

Ejections are reported as :class:`Ejection` events to ``detector.listeners``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from microcall._durations import to_seconds
from microcall._validate import number, positive_int
from microcall.errors import ConfigurationError

# Envoy's outlier detection defaults (consecutive_5xx, base_ejection_time,
# max_ejection_time, max_ejection_percent, interval).
DEFAULT_CONSECUTIVE_FAILURES = 5
DEFAULT_BASE_EJECTION_TIME = 30.0
DEFAULT_MAX_EJECTION_TIME = 300.0
DEFAULT_MAX_EJECTION_PERCENT = 10.0
DEFAULT_INTERVAL = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierEjectionConfig:
    """When an endpoint is ejected, for how long, and how much of a group at most."""

    consecutive_failures: int = DEFAULT_CONSECUTIVE_FAILURES
    base_ejection_time: float = DEFAULT_BASE_EJECTION_TIME
    max_ejection_time: float = DEFAULT_MAX_EJECTION_TIME
    max_ejection_percent: float = DEFAULT_MAX_EJECTION_PERCENT
    interval: float = DEFAULT_INTERVAL

    def __post_init__(self) -> None:
        positive_int("consecutive_failures", self.consecutive_failures)
        percent = number("max_ejection_percent", self.max_ejection_percent, minimum=0, maximum=100)
        object.__setattr__(self, "max_ejection_percent", percent)
        object.__setattr__(
            self,
            "base_ejection_time",
            to_seconds(self.base_ejection_time, name="base_ejection_time"),
        )
        object.__setattr__(
            self, "max_ejection_time", to_seconds(self.max_ejection_time, name="max_ejection_time")
        )
        object.__setattr__(self, "interval", to_seconds(self.interval, name="ejection interval"))
        if self.max_ejection_time < self.base_ejection_time:
            raise ConfigurationError(
                f"max_ejection_time ({self.max_ejection_time}) must be at least "
                f"base_ejection_time ({self.base_ejection_time})"
            )

    def max_ejected(self, group_size: int) -> int:
        """How many of ``group_size`` endpoints may be ejected at once."""
        if group_size < 2 or self.max_ejection_percent == 0:
            return 0
        share = math.floor(group_size * self.max_ejection_percent / 100)
        return min(max(share, 1), group_size - 1)


@dataclass(frozen=True, slots=True)
class Ejection:
    """An event: ``endpoint`` was ejected at ``at`` until ``until``, its ``count``-th time."""

    endpoint: str
    at: float
    until: float
    count: int


EjectionListener = Callable[[Ejection], None]


class _Record:
    __slots__ = ("consecutive", "ejected_until", "times")

    def __init__(self) -> None:
        self.consecutive = 0
        self.times = 0
        # -inf: never ejected, so "returned" at the dawn of time.
        self.ejected_until = -math.inf


class OutlierDetector:
    """Consecutive-failure ejection over one group of endpoints (addresses)."""

    __slots__ = ("_records", "config", "ejections", "listeners")

    def __init__(
        self,
        endpoints: Iterable[str],
        config: OutlierEjectionConfig | None = None,
        *,
        listeners: list[EjectionListener] | None = None,
    ) -> None:
        self.config = config or OutlierEjectionConfig()
        self.listeners: list[EjectionListener] = listeners if listeners is not None else []
        self.ejections = 0
        """Ejections ever made."""
        self._records: dict[str, _Record] = {address: _Record() for address in endpoints}

    def is_ejected(self, endpoint: str, now: float) -> bool:
        """Whether ``endpoint`` is out of rotation at ``now`` (unknown endpoints are not)."""
        record = self._records.get(endpoint)
        return record is not None and now < record.ejected_until

    def ejected(self, now: float) -> list[str]:
        """The endpoints out of rotation at ``now``."""
        return [address for address, record in self._records.items() if now < record.ejected_until]

    def record(self, endpoint: str, success: bool, now: float) -> Ejection | None:
        """Report an attempt's outcome; returns the ejection it caused, if any."""
        record = self._records.get(endpoint)
        if record is None or now < record.ejected_until:
            return None
        if success:
            record.consecutive = 0
            return None
        record.consecutive += 1
        if record.consecutive < self.config.consecutive_failures:
            return None
        if len(self.ejected(now)) >= self.config.max_ejected(len(self._records)):
            return None
        return self._eject(endpoint, record, now)

    def update(self, endpoints: Iterable[str], now: float) -> None:
        """Set the group's endpoints; those that stay keep their history.

        If the group shrank below what its current ejections need (its
        healthy endpoints left), the ejections ending soonest are lifted until
        the limit holds again: never every endpoint out.
        """
        wanted = dict.fromkeys(endpoints)
        self._records = {address: self._records.get(address) or _Record() for address in wanted}
        limit = self.config.max_ejected(len(self._records))
        ejected = [r for r in self._records.values() if now < r.ejected_until]
        ejected.sort(key=lambda r: r.ejected_until, reverse=True)
        for lifted in ejected[limit:]:
            lifted.ejected_until = now
            lifted.consecutive = 0

    def _eject(self, endpoint: str, record: _Record, now: float) -> Ejection:
        config = self.config
        if record.ejected_until > -math.inf:
            healthy_intervals = math.floor((now - record.ejected_until) / config.interval)
            record.times = max(record.times - healthy_intervals, 0)
        record.times += 1
        duration = min(config.base_ejection_time * record.times, config.max_ejection_time)
        record.ejected_until = now + duration
        record.consecutive = 0
        self.ejections += 1
        event = Ejection(endpoint, now, record.ejected_until, record.times)
        for listener in self.listeners:
            listener(event)
        return event
