"""Threads of a backend's own, for client libraries that block (diskcache, pymemcache).

A backend's blocking calls run on a small pool that belongs to it, not on
the event loop's default executor: that one also resolves host names for
aiohttp, and a store that hangs must not stall name resolution for every
call. The pool starts on first use and is shut down by ``close``; used
again, it starts afresh.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Threads:
    """``await threads.run(fn, *args)``: ``fn(*args)`` on this pool's threads."""

    __slots__ = ("_name", "_pool", "_size")

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._pool: cf.ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        pool = self._pool
        if pool is None:
            pool = self._pool = cf.ThreadPoolExecutor(self._size, thread_name_prefix=self._name)
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
