"""Counters kept by each server middleware: what it admitted, refused, ignored or cancelled."""

from __future__ import annotations

import threading
from typing import ClassVar

from microcall.priority import Priority


class ServerStats:
    """What one middleware instance has done since it was created.

    Read the attributes, or :meth:`snapshot` for a dict. Safe to update from
    WSGI worker threads; a metrics exporter can poll it.

    admitted            requests whose handler ran
    expired             refused because their deadline had passed on arrival (or nearly)
    rejected_malformed  refused with 400 in strict mode
    malformed_timeout   X-Request-Timeout values ignored as malformed
    malformed_priority  X-Request-Priority values ignored as malformed
    downgraded          high-priority claims from untrusted callers, served as normal
    shed_high, shed_normal, shed_low
                        refused by the concurrency limit, per priority
    cancelled           handlers cancelled because their deadline passed
    overran             handlers that finished after their deadline (wasted work)
    deadline_exceeded   handlers whose call ran out of the request's own deadline
                        (``microcall.DeadlineExceeded``), answered as expired
    """

    FIELDS: ClassVar[tuple[str, ...]] = (
        "admitted",
        "expired",
        "rejected_malformed",
        "malformed_timeout",
        "malformed_priority",
        "downgraded",
        "shed_high",
        "shed_normal",
        "shed_low",
        "cancelled",
        "overran",
        "deadline_exceeded",
    )

    __slots__ = (*FIELDS, "_lock")

    admitted: int
    expired: int
    rejected_malformed: int
    malformed_timeout: int
    malformed_priority: int
    downgraded: int
    shed_high: int
    shed_normal: int
    shed_low: int
    cancelled: int
    overran: int
    deadline_exceeded: int

    def __init__(self) -> None:
        self._lock = threading.Lock()
        for name in self.FIELDS:
            setattr(self, name, 0)

    def add(self, name: str) -> None:
        """Count one event called ``name`` (one of :attr:`FIELDS`)."""
        # ``x += 1`` on an attribute is a read and a write: two WSGI threads
        # can interleave them and lose a count.
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def add_shed(self, priority: Priority) -> None:
        self.add(f"shed_{priority.value}")

    @property
    def shed(self) -> int:
        """Requests refused by the concurrency limit, all priorities."""
        return self.shed_high + self.shed_normal + self.shed_low

    def snapshot(self) -> dict[str, int]:
        """Every counter, read at one instant."""
        with self._lock:
            return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.snapshot().items() if v)
        return f"ServerStats({counts})"
