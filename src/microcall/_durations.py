"""Durations given by users: seconds as ``float``, or ``timedelta``, normalised once."""

from __future__ import annotations

import math
from datetime import timedelta

from microcall.errors import ConfigurationError

Seconds = float | int | timedelta

_LONGEST_SHOWN = 128  # bits of an int an error message shows in digits


def to_seconds(value: Seconds, *, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` in seconds, or raise ConfigurationError naming ``name``.

    NaN, infinity and negative values are refused: an infinite wait is exactly
    what deadlines exist to prevent.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigurationError(f"{name} must be finite, got {given(value)}") from None
    else:
        raise ConfigurationError(
            f"{name} must be seconds (float) or a timedelta, got {given(value)}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigurationError(f"{name} must be finite, got {given(value)}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {given(value)}")
    return seconds


def given(value: object) -> str:
    """``repr(value)`` for an error message, even of an int too long to print."""
    if isinstance(value, int) and value.bit_length() > _LONGEST_SHOWN:
        # Its digits say nothing more, and past sys.get_int_max_str_digits()
        # repr() itself raises.
        return f"an int of {value.bit_length()} bits"
    return repr(value)
