"""A count over a sliding window of time: a ring of buckets with a running total.

The window is ``buckets`` buckets of ``span / buckets`` seconds. A count is
added to the bucket of its ``now``; a bucket is emptied when the ring moves
past it, so the window spans between ``buckets - 1`` and ``buckets`` buckets'
worth of time. The running total keeps every operation O(1), amortised over
the buckets the ring skips. A ``now`` earlier than one already seen counts in
the newest bucket: time never moves the ring backwards.
"""

from __future__ import annotations

import math


class SlidingCount:
    """How many things happened in the last ``span`` seconds (``total(now)``)."""

    __slots__ = ("_bucket_ends", "_buckets", "_epoch", "_index", "_sum", "_width")

    def __init__(self, span: float, buckets: int) -> None:
        self._width = span / buckets
        self._buckets = [0] * buckets
        self._sum = 0
        self._epoch: int | None = None
        # The current bucket and when it ends: most calls land in the same
        # bucket as the one before, and skip the arithmetic of _advance.
        self._index = 0
        self._bucket_ends = -math.inf

    def add(self, now: float, amount: int = 1) -> None:
        index = self._index if now < self._bucket_ends else self._advance(now)
        self._buckets[index] += amount
        self._sum += amount

    def total(self, now: float) -> int:
        if now >= self._bucket_ends:
            self._advance(now)
        return self._sum

    def clear(self) -> None:
        self._buckets = [0] * len(self._buckets)
        self._sum = 0

    def _advance(self, now: float) -> int:
        """Move the ring to ``now``'s bucket, emptying the buckets it passes; return its index."""
        count = len(self._buckets)
        epoch = math.floor(now / self._width)
        last = self._epoch
        if last is None:
            self._epoch = epoch
        elif epoch > last:
            if epoch - last >= count:
                self.clear()
            else:
                for passed in range(last + 1, epoch + 1):
                    index = passed % count
                    self._sum -= self._buckets[index]
                    self._buckets[index] = 0
            self._epoch = epoch
        else:
            epoch = last
        self._index = epoch % count
        self._bucket_ends = (epoch + 1) * self._width
        return self._index
