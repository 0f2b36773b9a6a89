"""What Client and FuturesClient share: an AsyncClient run on a background loop.

A front door's AsyncClient and loop live in an :class:`_Owned`, which holds no
reference to the front door. That lets three things find and release them
whatever became of the front door:

* ``weakref.finalize``: a front door dropped without ``close()`` releases its
  loop thread and sockets when it is collected. The finalizer never blocks
  (it may run on the loop's own thread, or in the middle of another client's
  call): it asks the loop to close the AsyncClient and stop, and the thread
  ends by itself.
* the exit handler closes, and joins, whatever is still open at exit, so no
  "Unclosed client session" is printed;
* after ``os.fork()`` the child abandons the parent's loop and AsyncClient
  (never closing them: see ``_fork``) and starts afresh on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from http.cookiejar import CookieJar
from types import TracebackType
from typing import Any, Self

from microcall.client._async import CLIENT_OPTIONS, AsyncClient, check_options
from microcall.client._direct import close_direct
from microcall.client._event_hooks import ResponseHook, parse_hooks
from microcall.client._fork import abandon, restart_libuv_pool_if_forked
from microcall.client._loop import BackgroundLoop, join_winding_down
from microcall.client._options import BaseURL, CallOptions, ClientOptions
from microcall.errors import UsageError

# How long the exit handler waits for a dropped client's loop to finish
# closing its sockets: closing a pool takes milliseconds; this only bounds a
# pathological case, so that exit never hangs on it.
EXIT_JOIN_TIMEOUT = 5.0

# Front doors alive now (for the exit handler and the fork hook).
_live: weakref.WeakSet[BlockingFrontDoor] = weakref.WeakSet()
# What front doors own and have not released yet, theirs alive or not.
_owned: set[_Owned] = set()


class _Owned:
    """A front door's AsyncClient and the loop that runs it; no reference to the front door."""

    __slots__ = ("base_url", "client", "loop", "options")

    def __init__(self, owner: str, base_url: BaseURL | None, options: ClientOptions) -> None:
        self.base_url = base_url
        self.options = options
        self.client = AsyncClient(base_url, **options)  # validates everything up front
        self.loop = BackgroundLoop(owner)

    def release_soon(self) -> None:
        """The finalizer: close the AsyncClient on its loop and stop the loop, without waiting."""
        _owned.discard(self)
        close_direct(self.client)
        self.loop.close_soon(self.client.aclose)

    def release(self) -> None:
        """Close the AsyncClient on its loop, stop the loop and join its thread."""
        _owned.discard(self)
        close_direct(self.client)
        self.loop.close(self.client.aclose)

    def after_fork_in_child(self) -> None:
        # The parent's loop thread does not exist in the child, and its pooled
        # sockets are the parent's: abandon both, start over on first use.
        abandon(self.client)
        self.loop.forget()
        self.client = AsyncClient(self.base_url, **self.options)


class BlockingFrontDoor:
    """Owns an AsyncClient and the loop thread that runs it; survives ``os.fork()``."""

    def __init__(
        self,
        base_url: BaseURL | None,
        options: ClientOptions,
        *,
        own_options: frozenset[str] = frozenset(),
    ) -> None:
        # Checked here, so an unknown option is named against this front door
        # and its own options, not the AsyncClient inside it.
        check_options(options, CLIENT_OPTIONS | own_options, type(self).__name__)
        # Request hooks run inside the AsyncClient, on the loop; response
        # hooks stay here, to run off the loop (see _event_hooks).
        hooks = parse_hooks(options.get("hooks"), sync_only=type(self).__name__)
        self._response_hooks: tuple[ResponseHook, ...] = hooks.response
        inner = options.copy()
        inner.pop("hooks", None)
        request_hooks = hooks.requests_only()
        if request_hooks is not None:
            inner["hooks"] = request_hooks
        owned = _Owned(type(self).__name__, base_url, inner)
        self._owned = owned
        self._async = owned.client
        self._loop = owned.loop
        self._closed = False
        # A callback holding ``owned``, never ``self``: the front door stays collectable.
        self._finalizer = weakref.finalize(self, owned.release_soon)
        self._finalizer.atexit = False  # the exit handler closes (and joins) instead
        _owned.add(owned)
        _live.add(self)

    @property
    def cookies(self) -> CookieJar | None:
        """The client's cookie jar (None: made without ``cookies=``, no cookie is kept)."""
        return self._async.cookies

    def _response_hooks_of(self, options: CallOptions) -> tuple[ResponseHook, ...]:
        """The client's and this call's response hooks; the call's request hooks stay in ``options``."""
        given = options.pop("hooks", None)
        if given is None:
            return self._response_hooks
        hooks = parse_hooks(given, sync_only=type(self).__name__, error=UsageError)
        request_hooks = hooks.requests_only()
        if request_hooks is not None:
            options["hooks"] = request_hooks
        return self._response_hooks + hooks.response

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"this {type(self).__name__} is closed")

    def _after_fork_in_child(self) -> None:
        self._async = self._owned.client

    async def _shutdown(self) -> None:
        await self._async.aclose()

    def close(self) -> None:
        """Stop the calls in flight (they raise ClientClosed), close the pool, stop the loop.

        Safe to call twice; calls made afterwards raise UsageError.
        """
        if self._closed:
            return
        self._loop.refuse_own_thread()
        self._closed = True
        self._finalizer.detach()
        _owned.discard(self._owned)
        close_direct(self._async)
        self._loop.close(self._shutdown)

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
    for owned in list(_owned):
        owned.after_fork_in_child()
    for client in list(_live):
        client._after_fork_in_child()


def _close_at_exit() -> None:
    # A client nobody closed still owns open sockets; close them while its
    # (daemon) loop thread is alive, so the pool shuts down cleanly and quietly.
    for client in list(_live):
        with contextlib.suppress(Exception):
            client.close()
    for owned in _owned.copy():  # dropped, not yet collected
        with contextlib.suppress(Exception):
            owned.release()
    join_winding_down(EXIT_JOIN_TIMEOUT)
    restart_libuv_pool_if_forked()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_at_exit)
