"""FuturesClient: every call returns a ``concurrent.futures.Future``, as in requests-futures."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import pickle
import threading
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Unpack

from yarl import URL

from microcall._limits import Limits
from microcall._redact import safe_path
from microcall._response import Response
from microcall._validate import whole
from microcall.client._blocking import BlockingFrontDoor
from microcall.client._event_hooks import ResponseHook, apply_response_hooks
from microcall.client._options import BaseURL, CallOptions, ClientOptions
from microcall.client._verbs import Verbs
from microcall.errors import CallError, ClientClosed, ConfigurationError, MicrocallError, UsageError

# Threads that run response hooks; hooks parse or post-process, they are not
# meant to block for long.
DEFAULT_HOOK_WORKERS = 4


# Options a FuturesClient takes besides every client's (named in its errors).
_OWN_OPTIONS = frozenset({"max_in_flight", "hook_workers", "executor"})


class FuturesClient(BlockingFrontDoor, Verbs["cf.Future[Response]"]):
    """Starts calls in the background and returns futures.

    ::

        with microcall.FuturesClient("http://catalog:8080") as client:
            futures = [client.get(f"/books/{n}") for n in range(100)]
            for future in concurrent.futures.as_completed(futures):
                print(future.result().status_code)

    * Exceptions surface at ``future.result()``; ``cancel()`` stops a call.
    * At most ``max_in_flight`` calls run at once (default: the pool's
      ``max_connections``); the rest wait in order.
    * ``hooks={"response": fn}`` (per client or per call) runs ``fn(response)``
      on the hook executor, never in the caller's thread nor on the event
      loop, before the future resolves; a hook that returns a Response
      replaces it (requests' hook convention). ``hooks={"request": fn}``
      runs ``fn(request)`` on the client's loop just before the request is
      sent (it may change headers: keep it quick).
    * ``executor=``: any ``concurrent.futures.Executor`` for the response
      hooks, a ``ProcessPoolExecutor`` for CPU-heavy parsing among them (its
      hooks must be module-level functions: they are pickled by name, and so
      is the response). The client never shuts down an executor it was
      given: whoever made it closes it. Without one, the client's own pool
      of ``hook_workers`` threads (default 4) runs them, and ``close()``
      shuts it down.
    * ``with`` / ``close()`` stops the calls that have not started (their
      futures raise ClientClosed) and waits for those that have.
    """

    def __init__(
        self,
        base_url: BaseURL | None = None,
        *,
        max_in_flight: int | None = None,
        hook_workers: int | None = None,
        executor: cf.Executor | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        # Its own options are checked first: a client is not built only to be refused.
        bound = (
            _pool_size(options.get("limits"))
            if max_in_flight is None
            else whole("max_in_flight", max_in_flight)
        )
        if executor is not None:
            if not isinstance(executor, cf.Executor):
                raise ConfigurationError(
                    f"executor must be a concurrent.futures.Executor, got {executor!r}"
                )
            if hook_workers is not None:
                raise ConfigurationError(
                    "hook_workers sizes the client's own thread pool; with executor= size "
                    "the executor itself"
                )
        workers = (
            DEFAULT_HOOK_WORKERS if hook_workers is None else whole("hook_workers", hook_workers)
        )
        super().__init__(base_url, options, own_options=_OWN_OPTIONS)
        self._max_in_flight = bound
        self._hook_workers = workers
        self._executor = executor  # the caller's: never shut down here
        check_picklable(executor, self._response_hooks, ConfigurationError)
        self._hook_pool: cf.ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(bound)
        self._queued: set[asyncio.Task[Response]] = set()
        self._tasks: set[asyncio.Task[Response]] = set()
        self._closing = False

    def request(
        self, method: str, url: str | URL, **options: Unpack[CallOptions]
    ) -> cf.Future[Response]:
        """Start a call; the future resolves to its response or raises its CallError."""
        self._check_open()
        chosen = self._response_hooks_of(options)
        if chosen is not self._response_hooks:
            check_picklable(self._executor, chosen, UsageError)
        # The deadline starts now, not when the call leaves the max_in_flight
        # queue: time spent waiting for a slot is part of what the caller allowed.
        try:
            options["deadline"] = self._async.deadline_for(options)
        except UsageError as refused:  # raised by the future, as every other usage error
            failed: cf.Future[Response] = cf.Future()
            failed.set_exception(refused)
            return failed
        options.pop("timeout", None)
        return self._loop.submit(self._run(method, url, options, chosen))

    def map(
        self,
        method: str,
        urls: Iterable[str | URL],
        *,
        return_exceptions: bool = False,
        **options: Unpack[CallOptions],
    ) -> list[Response | CallError]:
        """Fan out: one call per URL, all at once (within max_in_flight); results in order.

        With ``return_exceptions=True`` a failed call's CallError takes its
        place in the list; otherwise the first failure is raised (the other
        calls still finish).
        """
        futures = [self.request(method, url, **options) for url in urls]
        results: list[Response | CallError] = []
        for future in futures:
            try:
                results.append(future.result())
            except CallError as error:
                if not return_exceptions:
                    raise
                results.append(error)
        return results

    async def _run(
        self, method: str, url: str | URL, options: CallOptions, hooks: Sequence[ResponseHook]
    ) -> Response:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._slots.locked():
                self._queued.add(task)
                try:
                    await self._slots.acquire()
                except asyncio.CancelledError:
                    if not self._closing or task.uncancel() > 0:
                        raise
                    raise ClientClosed(
                        f"the FuturesClient was closed before {method} {safe_path(str(url))} was sent"
                    ) from None
                finally:
                    self._queued.discard(task)
            else:
                await self._slots.acquire()
            try:
                response = await self._async.request(method, url, **options)
            finally:
                self._slots.release()
            if hooks:
                loop = asyncio.get_running_loop()
                pool = self._pool()
                if isinstance(pool, cf.ThreadPoolExecutor):
                    run = partial(_run_hooks_of, self, hooks, response)
                else:  # a process pool pickles what it runs: the plain function
                    run = partial(apply_response_hooks, hooks, response)
                response = await loop.run_in_executor(pool, run)
            return response
        finally:
            self._tasks.discard(task)

    def _pool(self) -> cf.Executor:
        if self._executor is not None:
            return self._executor
        if self._hook_pool is None:
            self._hook_pool = cf.ThreadPoolExecutor(
                self._hook_workers, thread_name_prefix="microcall-hook"
            )
        return self._hook_pool

    async def _shutdown(self) -> None:
        self._closing = True
        for task in list(self._queued):
            task.cancel()
        if self._tasks:  # the queued ones ending with ClientClosed, the running ones finishing
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await super()._shutdown()

    def close(self) -> None:
        """Stop calls not yet started (their futures raise ClientClosed), wait for running ones."""
        if getattr(_hooks_running, "client", None) is self:
            # It would wait for the call whose hook is asking: for ever.
            raise RuntimeError(
                "a FuturesClient cannot be closed from inside its own response hook "
                "(close() waits for the calls running, the hook's among them)"
            )
        super().close()
        if self._hook_pool is not None:  # the client's own; a given executor is its maker's
            self._hook_pool.shutdown(wait=True)

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._queued = set()
        self._tasks = set()
        self._closing = False
        self._hook_pool = None


# The FuturesClient whose response hooks this thread is running, if any.
_hooks_running = threading.local()


def _run_hooks_of(
    client: FuturesClient, hooks: Sequence[ResponseHook], response: Response
) -> Response:
    """``apply_response_hooks``, with the thread marked as running ``client``'s hooks."""
    _hooks_running.client = client
    try:
        return apply_response_hooks(hooks, response)
    finally:
        _hooks_running.client = None


def _pool_size(limits: Limits | None) -> int:
    return (limits if isinstance(limits, Limits) else Limits()).max_connections


def check_picklable(
    executor: cf.Executor | None,
    hooks: Sequence[ResponseHook],
    error: type[MicrocallError],
) -> None:
    """Refuse hooks a process pool cannot run: it pickles each hook by name, so a lambda,
    a nested function or a method of a local class never reaches it."""
    if not isinstance(executor, cf.ProcessPoolExecutor):
        return
    for hook in hooks:
        try:
            pickle.dumps(hook)
        except Exception as exc:
            name = getattr(hook, "__qualname__", None) or repr(hook)
            raise error(
                f"response hook {name} cannot run on a ProcessPoolExecutor: a process pool "
                "pickles its hooks by name, so each must be a module-level function (not a "
                f"lambda, a nested function or a closure) ({type(exc).__name__}: {exc})"
            ) from None
