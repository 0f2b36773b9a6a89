"""A lock that a forked child gets back unlocked.

``os.fork()`` copies a lock as it is: if another thread of the parent held
it at that moment, the child's copy stays locked for ever, with no thread
left to release it, and the child's first resilient call hangs. A
``ForkSafeLock`` is replaced by a fresh lock in every child (the child has
only the forking thread, so nothing it holds can be lost).
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType


class ForkSafeLock:
    """``with lock:`` as with ``threading.Lock``; unlocked again in a forked child."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _LOCKS.add(self)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _renew(self) -> None:
        self._lock = threading.Lock()


_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_all() -> None:
    for lock in list(_LOCKS):
        lock._renew()


os.register_at_fork(after_in_child=_renew_all)
