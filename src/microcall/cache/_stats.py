"""What a cache counts, and the event it tells listeners about each answered call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from microcall._response import CacheStatus


@dataclass(slots=True)
class CacheStats:
    """Counters of one :class:`ResponseCache`, for metrics (read them, do not set them).

    One of ``hits``, ``misses``, ``revalidated``, ``stale`` and ``coalesced``
    grows by one for every cacheable call, by how it was answered (see
    :class:`microcall.CacheStatus`; a coalesced call that shared a hit counts
    as a hit). ``stored`` counts entries written, ``invalidated`` entries
    dropped after a successful unsafe call (POST, PUT, DELETE...),
    ``too_large`` entries the backend would not keep for their size (not
    stored, not errors), ``backend_errors`` failed backend operations, ``busy`` operations given
    up because the backend had no free connection (each a miss or a skipped
    write, not an error), ``refresh_errors`` background refreshes
    (stale-while-revalidate) that failed, ``unreadable`` stored values that did not decode
    (damaged, foreign or forged: each one a miss).
    """

    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    stale: int = 0
    coalesced: int = 0
    stored: int = 0
    too_large: int = 0
    invalidated: int = 0
    backend_errors: int = 0
    busy: int = 0
    refresh_errors: int = 0
    unreadable: int = 0

    def count(self, status: CacheStatus) -> None:
        if status is CacheStatus.HIT:
            self.hits += 1
        elif status is CacheStatus.MISS:
            self.misses += 1
        elif status is CacheStatus.REVALIDATED:
            self.revalidated += 1
        elif status is CacheStatus.STALE:
            self.stale += 1
        else:
            self.coalesced += 1


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """A cacheable call was answered: how (``status``), for which method and route.

    ``route`` is the call's route template (the method when none was given),
    never a raw path: a metric labelled with it stays bounded.
    """

    status: CacheStatus
    method: str
    route: str


CacheListener = Callable[[CacheEvent], None]
