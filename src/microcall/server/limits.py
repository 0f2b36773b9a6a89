"""Concurrency limits: how many requests a server works on at once.

A limit is configuration (a frozen value) that ``start()`` turns into an
estimator, the mutable object one server keeps. The estimator is told about
every finished request (when, how long it took, how many were in flight when
it started, whether it was *dropped*: cancelled at, or finished after, its
deadline) and answers the current limit. It never reads a clock or sleeps,
so its behaviour is a function of the samples and unit-testable as such.

Three kinds, in the style of Netflix's concurrency-limits:

* :class:`StaticLimit`: a fixed number, for a server whose capacity is known.
* :class:`~microcall.server.aimd.AIMDLimit`: additive increase while requests
  finish in time, multiplicative decrease when they do not.
* :class:`~microcall.server.gradient.GradientLimit`: grows while latency
  stays near its long-term average, shrinks as queueing pushes it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from microcall._validate import positive_int
from microcall.errors import ConfigurationError


class LimitEstimator(Protocol):
    """The live state of a limit: the current value, moved by samples."""

    @property
    def limit(self) -> int:
        """Requests that may be in flight at once now (at least 1)."""
        ...

    @property
    def probing(self) -> bool:
        """True while the estimator re-measures the server: hold back low and normal priority."""
        ...

    def on_sample(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        """One request finished at ``now`` after ``rtt`` seconds.

        ``inflight`` counts the requests in flight when it started (itself
        included); ``dropped`` says it was cancelled at, or finished after,
        its deadline.
        """
        ...


class ConcurrencyLimit(Protocol):
    """A limit's configuration; ``start()`` gives a server its own estimator."""

    def start(self) -> LimitEstimator: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticLimit:
    """A fixed concurrency limit: ``StaticLimit(limit=64)``."""

    limit: int

    def __post_init__(self) -> None:
        check_count(self.limit, "limit")

    def start(self) -> LimitEstimator:
        return _Fixed(self.limit)


class _Fixed:
    __slots__ = ("limit",)

    probing = False

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def on_sample(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        pass


def check_count(value: object, name: str) -> int:
    """``value`` if it is an int >= 1, else ConfigurationError naming ``name``."""
    return positive_int(name, value, what="an int")


def check_bounds(initial: int, minimum: int, maximum: int) -> None:
    for value, name in ((initial, "initial"), (minimum, "minimum"), (maximum, "maximum")):
        check_count(value, name)
    if not minimum <= initial <= maximum:
        raise ConfigurationError(
            f"limits need minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}"
        )
