"""Summaries of repeated measurements: median with its spread, percentiles, table cells."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of a figure over repeats, with the smallest and largest value seen."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(values), min(values), max(values))

    def cell(self, digits: int = 0) -> str:
        """``"1,234 (1,200-1,260)"``; the range is left out when there was one repeat."""
        if math.isnan(self.median):
            return "n/a"
        main = f"{self.median:,.{digits}f}"
        if self.low == self.high:
            return main
        return f"{main} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``fraction`` in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
