"""What Client and FuturesClient share: an AsyncClient run on a background loop."""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from types import TracebackType
from typing import Any, Self

from microcall.client._async import AsyncClient
from microcall.client._loop import BackgroundLoop
from microcall.client._options import BaseURL, ClientOptions
from microcall.errors import UsageError

_live: weakref.WeakSet[BlockingFrontDoor] = weakref.WeakSet()


class BlockingFrontDoor:
    """Owns an AsyncClient and the loop thread that runs it; survives ``os.fork()``."""

    def __init__(self, base_url: BaseURL | None, options: ClientOptions) -> None:
        self._base_url = base_url
        self._options = options
        self._async = AsyncClient(base_url, **options)  # validates everything up front
        self._loop = BackgroundLoop(f"microcall-{type(self).__name__}")
        self._closed = False
        _live.add(self)

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"this {type(self).__name__} is closed")

    def _after_fork_in_child(self) -> None:
        # The parent's loop thread does not exist in the child, and its pooled
        # sockets are the parent's: start over with a fresh loop and pool.
        self._loop.forget()
        self._async = AsyncClient(self._base_url, **self._options)

    async def _shutdown(self) -> None:
        await self._async.aclose()

    def close(self) -> None:
        """Close the pool and stop the loop thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._loop.started:
            self._loop.run(self._shutdown())
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a thread and sockets; it cannot be pickled")


def _reset_after_fork() -> None:
    for client in list(_live):
        client._after_fork_in_child()


def _close_at_exit() -> None:
    # A client nobody closed still owns open sockets; close them while its
    # (daemon) loop thread is alive, so the pool shuts down cleanly and quietly.
    for client in list(_live):
        with contextlib.suppress(Exception):
            client.close()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_at_exit)
