"""Deadlines: the total time a call, and everything it causes downstream, may take.

A deadline is an instant on the monotonic clock, not a duration: once set it
only runs down, however many attempts or hops share it. What crosses the wire
is the *remaining* time (``X-Request-Timeout: 1.499``), so the two ends'
clocks never need to agree.

The ``microcall.deadline()`` block that sets one for the calls inside it
lives with the other context in :mod:`microcall.context`.
"""

from __future__ import annotations

from microcall._clock import MONOTONIC, Clock
from microcall._durations import Seconds, to_seconds


class Deadline:
    """An instant on a monotonic clock after which nobody waits for the answer.

    >>> d = Deadline.after(2.0)
    >>> 0 < d.remaining() <= 2.0
    True
    """

    __slots__ = ("_clock", "expires_at")

    def __init__(self, expires_at: float, *, clock: Clock = MONOTONIC) -> None:
        self.expires_at = expires_at
        self._clock = clock

    @classmethod
    def after(cls, seconds: Seconds, *, clock: Clock = MONOTONIC) -> Deadline:
        """A deadline ``seconds`` from now (``0`` is allowed: already expired)."""
        return cls(clock.now() + to_seconds(seconds, name="deadline", allow_zero=True), clock=clock)

    @property
    def clock(self) -> Clock:
        return self._clock

    def remaining(self) -> float:
        """Seconds left, never negative."""
        left = self.expires_at - self._clock.now()
        return left if left > 0.0 else 0.0

    def expired(self) -> bool:
        return self._clock.now() >= self.expires_at

    def shorten_to(self, other: Deadline | None) -> Deadline:
        """The earlier of the two deadlines: nested deadlines can only shrink."""
        if other is None or other.expires_at >= self.expires_at:
            return self
        return other

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
