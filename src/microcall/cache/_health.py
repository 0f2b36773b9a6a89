"""Whether a cache backend is answering: a failing one is left alone for a while, and said so once.

Theory of operation. Two states::

          an operation fails
    UP ─────────────────────────► DOWN (until now + retry_after)
     ▲                              │
     │ the first operation after    │ retry_after passed: the next
     │ retry_after succeeds         │ operation is tried; if it fails,
     └──────────────────────────────┘ DOWN again for another retry_after

While DOWN the cache does not touch the backend: calls go to the service
uncached, and nothing is stored. A failing store is never a failed call.

Logging is rate-limited: the first failure after UP logs a warning; more
failures log at most one warning per ``warn_every`` seconds, with how many
there were since the last; the return to UP logs once, at info. Time comes
from the cache's clock, passed in as ``now``.
"""

from __future__ import annotations

import logging

log = logging.getLogger("microcall.cache")


class BackendHealth:
    """UP or DOWN for one backend, and the warnings about it."""

    __slots__ = (
        "_down_until",
        "_failing",
        "_last_warning",
        "_name",
        "_retry_after",
        "_unreported",
        "_warn_every",
        "failures",
    )

    def __init__(self, name: str, *, retry_after: float, warn_every: float) -> None:
        self._name = name
        self._retry_after = retry_after
        self._warn_every = warn_every
        self._down_until = -float("inf")
        self._failing = False
        self._last_warning = -float("inf")
        self._unreported = 0
        self.failures = 0

    @property
    def failing(self) -> bool:
        """True from a failure until the next operation that succeeds."""
        return self._failing

    def available(self, now: float) -> bool:
        """Whether to use the backend now (False while DOWN)."""
        return now >= self._down_until

    def failed(self, error: BaseException, operation: str, now: float) -> None:
        self.failures += 1
        self._down_until = now + self._retry_after
        first = not self._failing
        self._failing = True
        if first or now - self._last_warning >= self._warn_every:
            since = (
                f" ({self._unreported} more failures since the last warning)" if not first else ""
            )
            log.warning(
                "cache backend %s failed on %s: %s: %s; calls go uncached, retrying it in %g s%s",
                self._name,
                operation,
                type(error).__name__,
                error,
                self._retry_after,
                since,
                extra={"microcall_event": "cache_backend_down", "backend": self._name},
            )
            self._last_warning = now
            self._unreported = 0
        else:
            self._unreported += 1

    def succeeded(self) -> None:
        # An operation that answers (one begun before the failure, or the
        # retry) ends DOWN at once: "not failing" and "writes skipped" must
        # never hold together.
        self._down_until = -float("inf")
        if self._failing:
            self._failing = False
            self._unreported = 0
            log.info(
                "cache backend %s answers again",
                self._name,
                extra={"microcall_event": "cache_backend_up", "backend": self._name},
            )
