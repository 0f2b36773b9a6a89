"""Rate limiting for log lines: an outage must not flood the log.

Theory of operation. Each key (an event and what it is about: ``("shed",
"low")``, ``("breaker_state", "10.0.0.7:8080")``) has a token bucket holding
up to ``burst`` tokens, refilled by one every ``every`` seconds; a line
spends one. A second bucket shared by all keys caps the total the same way,
so a hundred endpoints failing together still write a bounded number of
lines. When either bucket is empty the line is suppressed and counted
against its key; the next line that key gets through reports how many were
suppressed before it, so nothing disappears without a trace.

The limiter never reads a clock: callers pass ``now`` (monotonic seconds),
so tests drive it with a fake clock. It remembers at most ``max_keys`` keys,
forgetting the least recently seen (whose next line then starts from a full
bucket: more lines, never fewer, after a flood of distinct keys).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from microcall._durations import to_seconds
from microcall._validate import positive_int

# A few lines at once tell the story of one endpoint or priority (a breaker
# opening, probing, closing); then one per half minute while it lasts.
DEFAULT_BURST = 5
DEFAULT_EVERY = 30.0
# Across everything: twenty at once, then one every three seconds (1,200 an
# hour at worst, which a person can still scroll through).
DEFAULT_TOTAL_BURST = 20
DEFAULT_TOTAL_EVERY = 3.0
DEFAULT_MAX_KEYS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLimitConfig:
    """How many log lines each key, and all keys together, may write."""

    burst: int = DEFAULT_BURST
    every: float = DEFAULT_EVERY
    total_burst: int = DEFAULT_TOTAL_BURST
    total_every: float = DEFAULT_TOTAL_EVERY
    max_keys: int = DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        for name in ("burst", "total_burst", "max_keys"):
            positive_int(name, getattr(self, name))
        object.__setattr__(self, "every", to_seconds(self.every, name="every"))
        object.__setattr__(self, "total_every", to_seconds(self.total_every, name="total_every"))


class _Bucket:
    __slots__ = ("at", "suppressed", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.suppressed = 0

    def refill(self, now: float, burst: int, every: float) -> None:
        if now > self.at:
            self.tokens = min(float(burst), self.tokens + (now - self.at) / every)
            self.at = now


class LogLimiter:
    """Decides which log lines are written: ``allow(key, now)``.

    >>> limiter = LogLimiter(LogLimitConfig(burst=1, every=10))
    >>> limiter.allow("shed", now=0.0), limiter.allow("shed", now=1.0), limiter.allow("shed", now=11.0)
    (0, None, 1)
    """

    def __init__(self, config: LogLimitConfig | None = None) -> None:
        self.config = config = config or LogLimitConfig()
        self._keys: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._total: _Bucket | None = None
        self._lock = threading.Lock()  # WSGI worker threads log too

    def allow(self, key: Hashable, now: float) -> int | None:
        """None: suppress this line. Else write it, saying how many were suppressed before it."""
        config = self.config
        with self._lock:
            bucket = self._keys.get(key)
            if bucket is None:
                bucket = self._keys[key] = _Bucket(float(config.burst), now)
                if len(self._keys) > config.max_keys:
                    self._keys.popitem(last=False)
            else:
                self._keys.move_to_end(key)
                bucket.refill(now, config.burst, config.every)
            total = self._total
            if total is None:
                total = self._total = _Bucket(float(config.total_burst), now)
            else:
                total.refill(now, config.total_burst, config.total_every)
            if bucket.tokens < 1.0 or total.tokens < 1.0:
                bucket.suppressed += 1
                return None
            bucket.tokens -= 1.0
            total.tokens -= 1.0
            suppressed, bucket.suppressed = bucket.suppressed, 0
            return suppressed
