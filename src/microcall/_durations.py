"""Durations given by users: seconds as ``float``, or ``timedelta``, normalised once."""

from __future__ import annotations

import math
from datetime import timedelta

from microcall.errors import ConfigurationError

Seconds = float | int | timedelta


def to_seconds(value: Seconds, *, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` in seconds, or raise ConfigurationError naming ``name``.

    NaN, infinity and negative values are refused: an infinite wait is exactly
    what deadlines exist to prevent.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(f"{name} must be seconds (float) or a timedelta, got {value!r}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds
