"""Checks of configuration values: a bad one raises ConfigurationError naming it, at construction.

Counts, sizes and ratios are checked here; durations by :func:`to_seconds`
(re-exported here as :func:`seconds`). A ``bool`` is never a number here,
though Python lets it pass for one: ``max_calls=True`` is a mistake, not 1.

>>> positive_int("burst", 3), fraction("max_extra_load", 0.05)
(3, 0.05)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

from microcall._durations import given, to_seconds
from microcall.errors import ConfigurationError

__all__ = ["flag", "fraction", "instance", "items", "number", "positive_int", "seconds", "whole"]

seconds = to_seconds

T = TypeVar("T")


def whole(
    name: str,
    value: object,
    *,
    minimum: int | None = 1,
    maximum: int | None = None,
    what: str = "an integer",
) -> int:
    """``value`` if it is an int (never a bool) from ``minimum`` to ``maximum`` (inclusive).

    A bound given as None is no bound: ``whole("seed", seed, minimum=None)`` takes any int.
    """
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if minimum is not None and maximum is not None:
            rule = f"{what} from {minimum} to {maximum}"
        elif minimum is not None:
            rule = f"{what} >= {minimum}"
        elif maximum is not None:
            rule = f"{what} <= {maximum}"
        else:
            rule = what
        raise ConfigurationError(f"{name} must be {rule}, got {given(value)}")
    return value


def positive_int(name: str, value: object, *, what: str = "an integer") -> int:
    """``value`` if it is an int >= 1 (a count, a size, a limit)."""
    return whole(name, value, minimum=1, what=what)


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    what: str = "a finite number",
) -> float:
    """``value`` as a float if it is a finite int or float (never a bool) within the bounds.

    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` / ``below`` exclusive.
    """
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not _finite(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        bounds = [
            f"{sign} {bound}"
            for sign, bound in ((">=", minimum), ("<=", maximum), (">", above), ("<", below))
            if bound is not None
        ]
        rule = " ".join([what, " and ".join(bounds)]).strip()
        raise ConfigurationError(f"{name} must be {rule}, got {given(value)}")
    return float(value)


def fraction(name: str, value: object) -> float:
    """``value`` as a float if it lies strictly between 0 and 1."""
    return number(name, value, above=0.0, below=1.0, what="a fraction")


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: as good as infinite
        return False


def flag(name: str, value: object) -> bool:
    """``value`` if it is a bool: ``strict="no"`` is a mistake, not True."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {given(value)}")
    return value


def instance(name: str, value: object, expected: type | tuple[type, ...], what: str) -> None:
    """Refuse ``value`` unless it is an ``expected``, described to the user as ``what``."""
    if not isinstance(value, expected):
        raise ConfigurationError(f"{name} must be {what}, got {given(value)}")


def items(name: str, value: Iterable[T]) -> tuple[T, ...]:
    """``value`` as a tuple if it is a collection of things (a list, a tuple; not a str)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list, got {given(value)}")
    return tuple(value)
