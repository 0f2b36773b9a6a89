"""ResponseCache: the client's response cache, over a backend, applying HTTP caching semantics.

The decisions are pure (``_freshness``); this module does what they say:
reads and writes the backend (treating a failing one as absent, see
``_health``), coalesces identical calls (``_flight``), sends through the
client's engine, and counts every answer. For one cacheable call::

    lookup (URL key; variant key if the latest variant is another)
      fresh entry          -> HIT: a copy of the entry; nothing sent
      stale, validator     -> send conditionally; 304 -> REVALIDATED (entry refreshed)
      none, or no validator -> send
    service failed (CallError, 500/502/503/504) and a stale entry allows it
                           -> STALE: the entry, with the failed attempts
    otherwise              -> MISS: the service's response, stored if allowed

A successful unsafe call (POST, PUT, PATCH, DELETE, 2xx/3xx) drops the
entries of its URL and of same-origin Location / Content-Location (RFC 9111
section 4.4).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall._clock import Clock
from microcall._durations import Seconds, to_seconds
from microcall._request import Request
from microcall._response import CacheStatus, Response
from microcall.cache._backend import BackendBusy, CacheBackend, EntryTooLarge
from microcall.cache._codec import UnreadableEntry
from microcall.cache._directives import NONE, Directives, header_value, request_directives
from microcall.cache._entry import Entry, vary_value
from microcall.cache._flight import Flight
from microcall.cache._freshness import (
    ERROR_STATUSES,
    accepts_stale,
    build_entry,
    bypasses,
    conditional_headers,
    freshen,
    identity,
    is_fresh,
    revalidates_in_background,
    serves_stale_on_error,
    storage_ttl,
)
from microcall.cache._health import BackendHealth
from microcall.cache._keys import check_namespace, new_nonce, url_key, variant_key
from microcall.cache._memory import MemoryBackend
from microcall.cache._policy import CachePolicy
from microcall.cache._stats import CacheEvent, CacheListener, CacheStats
from microcall.errors import CallError, ConfigurationError, DeadlineExceeded

log = logging.getLogger("microcall.cache")

Send = Callable[[Request], Awaitable[Response]]

# A backend that failed is left alone this long before it is tried again:
# long enough that calls do not each pay its timeout, short enough that the
# cache is back soon after the backend is.
DEFAULT_RETRY_BACKEND_AFTER = 5.0
# At most one warning per this many seconds while a backend keeps failing.
DEFAULT_WARN_EVERY = 60.0

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_SHARED_STATUSES = frozenset({CacheStatus.HIT, CacheStatus.STALE})


class WallClock:
    """Seconds since the epoch (``time.time``): entries are read by other hosts and after restarts."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


WALL_CLOCK: Clock = WallClock()


class ResponseCache:
    """A response cache for clients: ``AsyncClient(url, cache=ResponseCache(...))``.

    ::

        cache = ResponseCache(RedisBackend("redis://cache:6379/0"),
                              CachePolicy(default_ttl=30, stale_if_error=300))
        async with AsyncClient("http://catalog:8080", cache=cache) as client:
            response = await client.get("/books/1")
            response.cache_status   # CacheStatus.MISS, then HIT for 30 s

    ``backend`` defaults to a :class:`MemoryBackend`; ``policy`` to
    ``CachePolicy()`` (HTTP semantics, no TTL of its own). ``namespace``
    prefixes every key, so several applications can share one store.
    ``clock`` gives seconds since the epoch (HTTP dates are wall-clock
    times); tests pass a :class:`microcall.testing.FakeClock`.

    When the backend fails, calls go to the service uncached for
    ``retry_backend_after`` seconds, with a warning logged at most every
    ``warn_every`` seconds; a cache never fails a call.

    ``stats`` counts what happened (:class:`CacheStats`); ``events`` is a list
    of callables, each given a :class:`CacheEvent` for every cacheable call
    (append one to feed metrics). One cache may serve several clients.

    Whoever makes the cache owns it, and its backend: close it with
    ``await cache.aclose()`` (or ``async with cache:``) once its clients are
    done. Closing a client leaves its cache alone.
    """

    def __init__(
        self,
        backend: CacheBackend | None = None,
        policy: CachePolicy | None = None,
        *,
        namespace: str = "microcall",
        clock: Clock = WALL_CLOCK,
        retry_backend_after: Seconds = DEFAULT_RETRY_BACKEND_AFTER,
        warn_every: Seconds = DEFAULT_WARN_EVERY,
    ) -> None:
        self.backend: CacheBackend = MemoryBackend() if backend is None else backend
        for method in ("get", "set", "delete", "aclose"):
            if not callable(getattr(self.backend, method, None)):
                raise ConfigurationError(
                    f"backend must be a CacheBackend (async get, set, delete and aclose), "
                    f"got {backend!r}"
                )
        given: object = CachePolicy() if policy is None else policy
        if not isinstance(given, CachePolicy):
            raise ConfigurationError(f"policy must be a CachePolicy, got {policy!r}")
        self.policy = given
        self._namespace = check_namespace(namespace)
        self._clock = clock
        self._health = BackendHealth(
            type(self.backend).__name__,
            retry_after=to_seconds(retry_backend_after, name="retry_backend_after"),
            warn_every=to_seconds(warn_every, name="warn_every", allow_zero=True),
        )
        self._unreadable_warned = -float("inf")
        self._warn_every = to_seconds(warn_every, name="warn_every", allow_zero=True)
        self._flights: dict[Hashable, Flight] = {}
        self._refreshes: set[asyncio.Task[None]] = set()
        self.stats = CacheStats()
        self.events: list[CacheListener] = []

    @property
    def backend_failing(self) -> bool:
        """True from a backend failure until the backend answers again."""
        return self._health.failing

    # ------------------------------------------------------------ the call

    async def call(
        self,
        request: Request,
        send: Send,
        *,
        policy: CachePolicy | None = None,
        timeout: float,
    ) -> Response:
        """Answer ``request`` from the cache or through ``send`` (the client's engine).

        ``policy`` replaces the cache's own for this call; ``timeout`` is the
        seconds left of the call's deadline (how long a coalesced call waits).
        """
        chosen = self.policy if policy is None else policy
        method = request.method
        if method not in chosen.methods:
            response = await send(request)
            if method not in _SAFE_METHODS and 200 <= response.status_code < 400:
                await self._invalidate_after(request, response, chosen)
            return response
        if bypasses(request):
            return await send(request)
        wanted = request_directives(request.headers) if request.headers else NONE
        url = chosen.cache_url(request.url)
        if not chosen.coalesce:
            return await self._answer(request, url, send, chosen, wanted)
        loop = asyncio.get_running_loop()
        key = (
            loop,
            method,
            url,
            tuple(request.headers.items()),
            None if policy is None else policy,
        )
        give_up_at = None
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, request, url, send, chosen, wanted)
            if give_up_at is None:
                give_up_at = loop.time() + timeout
            shared = await self._follow(flight, request, give_up_at, chosen)
            if shared is not None:
                return shared
            # The leader was cancelled or ran out of its deadline: start over.

    async def _lead(
        self,
        key: Hashable,
        request: Request,
        url: str,
        send: Send,
        policy: CachePolicy,
        wanted: Directives,
    ) -> Response:
        flight = self._flights[key] = Flight()
        try:
            response = await self._answer(request, url, send, policy, wanted)
        except BaseException as exc:
            self._flights.pop(key, None)
            # The leader's own deadline is not the followers': they start over.
            shared = exc if isinstance(exc, CallError) else None
            flight.settle(None if isinstance(exc, DeadlineExceeded) else shared)
            raise
        self._flights.pop(key, None)
        flight.settle(response)
        return response

    async def _follow(
        self, flight: Flight, request: Request, give_up_at: float, policy: CachePolicy
    ) -> Response | None:
        waiting = flight.join()
        try:
            async with asyncio.timeout_at(give_up_at):
                outcome = await waiting
        except TimeoutError:
            raise DeadlineExceeded(
                "deadline exceeded waiting for an identical call in flight", request=request
            ) from None
        if outcome is None:
            return None
        if isinstance(outcome, CallError):
            error = copy.copy(outcome)
            error.request = request
            raise error
        status = outcome.cache_status
        # The leader's answer as a stored one would be: what the leader alone
        # was given (its URL, with parameters ignored in the key such as a
        # token; a Set-Cookie minted for it) does not reach the followers.
        led = outcome.request
        if led is None or outcome.url == led.url:
            url = request.url
        else:  # a redirect's: its target, less the leader's ignored parameters
            url = URL(policy.cache_url(outcome.url), encoded=True)
        headers = outcome.headers
        if "Set-Cookie" in headers:
            headers = CIMultiDictProxy(
                CIMultiDict((k, v) for k, v in headers.items() if k.lower() != "set-cookie")
            )
        shared = Response(
            status_code=outcome.status_code,
            headers=headers,
            content=outcome.content,
            url=url,
            request=request,
            reason=outcome.reason,
        )
        shared.cache_status = status if status in _SHARED_STATUSES else CacheStatus.COALESCED
        self._tell(shared.cache_status, request)
        return shared

    async def _answer(
        self, request: Request, url: str, send: Send, policy: CachePolicy, wanted: Directives
    ) -> Response:
        method = request.method
        headers = request.headers
        key = url_key(self._namespace, method, url, "" if policy.shared else identity(headers))
        found = await self._read(key)
        entry: Entry | None = None
        if found is not None:
            if found.answers(method, url, headers):
                entry = found
            elif found.vary and found.method == method and found.url == url:
                values = tuple((name, vary_value(headers, name)) for name, _ in found.vary)
                variant = await self._read(variant_key(key, found.nonce, values))
                if variant is not None and variant.answers(method, url, headers):
                    entry = variant
        now = self._clock.now()
        if entry is not None:
            if is_fresh(entry, now, wanted):
                self._tell(CacheStatus.HIT, request)
                return entry.to_response(request, CacheStatus.HIT, now)
            if accepts_stale(entry, now, wanted):
                self._tell(CacheStatus.STALE, request)
                return entry.to_response(request, CacheStatus.STALE, now)
            if revalidates_in_background(entry, now, wanted):
                self._refresh_later(key, request, url, send, policy, found, entry)
                self._tell(CacheStatus.STALE, request)
                return entry.to_response(request, CacheStatus.STALE, now)
        if wanted.only_if_cached:
            # RFC 9111 section 5.2.1.7: nothing suitable stored, so nothing is sent.
            self._tell(CacheStatus.MISS, request)
            return _gateway_timeout(request)
        return await self._fetch(request, url, send, policy, wanted, key, found, entry)

    async def _fetch(
        self,
        request: Request,
        url: str,
        send: Send,
        policy: CachePolicy,
        wanted: Directives,
        key: str,
        found: Entry | None,
        entry: Entry | None,
        *,
        tell: bool = True,
    ) -> Response:
        """Send (conditionally when ``entry`` has validators), store, and answer."""
        conditions = conditional_headers(entry) if entry is not None else {}
        outgoing = (
            dataclasses.replace(request, headers={**request.headers, **conditions})
            if conditions
            else request
        )
        try:
            response = await send(outgoing)
        except CallError as error:
            stale = self._stale(entry, request, wanted) if tell else None
            if stale is None:
                raise
            stale.attempts = error.attempts
            return stale

        status = response.status_code
        if status == 304 and conditions:
            assert entry is not None
            now = self._clock.now()
            refreshed = freshen(entry, response, request, now=now, policy=policy)
            if refreshed is not None:
                await self._write(key, refreshed, policy, now)
                answer = refreshed.to_response(request, CacheStatus.REVALIDATED, now)
                answer.attempts = response.attempts
                answer.elapsed = response.elapsed
                if tell:
                    self._tell(CacheStatus.REVALIDATED, request)
                return answer
            # The 304 names another representation than the one stored.
            response = await send(request)
            status = response.status_code
        if status in ERROR_STATUSES:
            stale = self._stale(entry, request, wanted) if tell else None
            if stale is not None:
                stale.attempts = response.attempts
                return stale
        else:
            now = self._clock.now()
            nonce = found.nonce if found is not None and found.nonce else new_nonce()
            fresh = build_entry(
                request, response, now=now, policy=policy, nonce=nonce, wanted=wanted, url=url
            )
            if fresh is not None:
                await self._write(key, fresh, policy, now)
            elif found is not None and not wanted.no_store and 200 <= status < 400:
                # The service no longer lets this answer be kept: drop the old one.
                await self._delete([key])
        response.cache_status = CacheStatus.MISS
        if tell:
            self._tell(CacheStatus.MISS, request)
        return response

    # ------------------------------------------------------------ stale-while-revalidate

    def _refresh_later(
        self,
        key: str,
        request: Request,
        url: str,
        send: Send,
        policy: CachePolicy,
        found: Entry | None,
        entry: Entry,
    ) -> None:
        """Refresh ``entry`` in the background, unless a refresh of ``key`` is already under way."""
        flight_key = ("refresh", asyncio.get_running_loop(), key)
        if flight_key in self._flights:
            return
        flight = self._flights[flight_key] = Flight()
        task = asyncio.get_running_loop().create_task(
            self._refresh(flight_key, flight, request, url, send, policy, key, found, entry)
        )
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh(
        self,
        flight_key: Hashable,
        flight: Flight,
        request: Request,
        url: str,
        send: Send,
        policy: CachePolicy,
        key: str,
        found: Entry | None,
        entry: Entry,
    ) -> None:
        try:
            await self._fetch(request, url, send, policy, NONE, key, found, entry, tell=False)
        except Exception as exc:  # the caller has its answer; the next one tries again
            self.stats.refresh_errors += 1
            log.debug("background refresh of %s failed: %r", request.url, exc)
        finally:
            self._flights.pop(flight_key, None)
            flight.settle(None)

    def _stale(self, entry: Entry | None, request: Request, wanted: Directives) -> Response | None:
        if entry is None:
            return None
        now = self._clock.now()
        if not serves_stale_on_error(entry, now, wanted):
            return None
        self._tell(CacheStatus.STALE, request)
        return entry.to_response(request, CacheStatus.STALE, now)

    # ------------------------------------------------------------ invalidation

    async def get_entry(
        self,
        url: str | URL,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> Entry | None:
        """The stored entry a ``method url`` request with ``headers`` would find, fresh or not.

        For inspection (``entry.fresh_until``, ``entry.status``, ``entry.body``);
        ``await cache.invalidate(url)`` deletes it. ``headers`` choose among
        Vary'd variants, and the caller's entries in a private cache.
        """
        given = headers or {}
        target = self.policy.cache_url(URL(url) if isinstance(url, str) else url)
        who = "" if self.policy.shared else identity(given)
        key = url_key(self._namespace, method.upper(), target, who)
        found = await self._read(key)
        if found is None or found.answers(method.upper(), target, given):
            return found
        if not found.vary:
            return None
        values = tuple((name, vary_value(given, name)) for name, _ in found.vary)
        variant = await self._read(variant_key(key, found.nonce, values))
        return (
            variant
            if variant is not None and variant.answers(method.upper(), target, given)
            else None
        )

    async def invalidate(self, url: str | URL, *, headers: Mapping[str, str] | None = None) -> None:
        """Drop the stored GET and HEAD answers for ``url`` (an absolute URL).

        ``headers`` matter only to a private cache (``shared=False``), whose
        entries are kept per Authorization / Cookie.
        """
        target = URL(url) if isinstance(url, str) else url
        await self._drop([target], headers or {}, self.policy)

    async def _invalidate_after(
        self, request: Request, response: Response, policy: CachePolicy
    ) -> None:
        urls = [request.url]
        for name in ("Location", "Content-Location"):
            value = header_value(response.headers, name)
            if not value:
                continue
            try:
                target = request.url.join(URL(value))
            except (ValueError, TypeError):
                continue
            # Only the same origin: a response must not evict another service's entries.
            if target.absolute and target.origin() == request.url.origin():
                urls.append(target.with_fragment(None))
        await self._drop(urls, request.headers, policy)

    async def _drop(
        self, urls: Sequence[URL], headers: Mapping[str, str], policy: CachePolicy
    ) -> None:
        who = "" if policy.shared else identity(headers)
        keys = [
            url_key(self._namespace, method, url, who)
            for url in dict.fromkeys(policy.cache_url(target) for target in urls)
            for method in ("GET", "HEAD")
        ]
        if await self._delete(keys):
            self.stats.invalidated += 1

    # ------------------------------------------------------------ the backend, guarded

    async def _read(self, key: str) -> Entry | None:
        health = self._health
        if health.failing and not health.available(self._clock.now()):
            return None
        try:
            entry = await self.backend.get(key)
        except UnreadableEntry as exc:
            self._unreadable(exc)
            return None
        except BackendBusy:
            self.stats.busy += 1
            return None
        except Exception as exc:
            self._failed(exc, "get")
            return None
        if health.failing:
            health.succeeded()
        return entry

    async def _write(self, key: str, entry: Entry, policy: CachePolicy, now: float) -> None:
        ttl = storage_ttl(entry, policy, now)
        if ttl <= 0.0 or not self._health.available(now):
            return
        keys = [key, variant_key(key, entry.nonce, entry.vary)] if entry.vary else [key]
        for one in keys:
            try:
                await self.backend.set(one, entry, ttl)
            except BackendBusy:
                self.stats.busy += 1
                return
            except EntryTooLarge:
                self.stats.too_large += 1
                return
            except Exception as exc:
                self._failed(exc, "set")
                return
        self._health.succeeded()
        self.stats.stored += 1

    async def _delete(self, keys: list[str]) -> bool:
        if not self._health.available(self._clock.now()):
            return False
        try:
            await self.backend.delete(keys)
        except BackendBusy:
            self.stats.busy += 1
            return False
        except Exception as exc:
            self._failed(exc, "delete")
            return False
        self._health.succeeded()
        return True

    def _failed(self, error: Exception, operation: str) -> None:
        self.stats.backend_errors += 1
        self._health.failed(error, operation, self._clock.now())

    def _unreadable(self, error: UnreadableEntry) -> None:
        self.stats.unreadable += 1
        now = self._clock.now()
        if now - self._unreadable_warned >= self._warn_every:
            self._unreadable_warned = now
            log.warning(
                "cache backend %s returned an unreadable entry (%s); treated as a miss (%d so far)",
                type(self.backend).__name__,
                error,
                self.stats.unreadable,
                extra={"microcall_event": "cache_entry_unreadable"},
            )

    # ------------------------------------------------------------ counting

    def _tell(self, status: CacheStatus, request: Request) -> None:
        self.stats.count(status)
        if self.events:
            event = CacheEvent(status, request.method, request.route or request.method)
            for listener in self.events:
                try:
                    listener(event)
                except Exception:
                    log.exception("cache listener %r failed", listener)

    # ------------------------------------------------------------ ownership

    async def aclose(self) -> None:
        """Release the backend's connections and threads; the cache stays usable.

        The cache's creator calls this (or uses ``async with cache:``) when
        every client using the cache is done: a client never closes a cache
        it was given, since another client may still be using it.
        """
        refreshes = list(self._refreshes)
        for task in refreshes:
            task.cancel()
        await asyncio.gather(*refreshes, return_exceptions=True)
        try:
            await self.backend.aclose()
        except Exception as exc:
            log.warning("closing cache backend %s failed: %s", type(self.backend).__name__, exc)

    async def __aenter__(self) -> ResponseCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _gateway_timeout(request: Request) -> Response:
    """The answer to ``only-if-cached`` when nothing stored may answer (RFC 9111 section 5.2.1.7)."""
    response = Response(
        status_code=504,
        headers=CIMultiDictProxy(CIMultiDict()),
        content=b"",
        url=request.url,
        request=request,
        reason="Gateway Timeout",
    )
    response.cache_status = CacheStatus.MISS
    return response
