"""AsyncClient: the engine's own front door, for asyncio code."""

from __future__ import annotations

import dataclasses
import json as _json
import time
from collections.abc import Coroutine, Mapping, Sequence
from functools import partial
from http.cookiejar import CookieJar
from types import TracebackType
from typing import Any, Unpack
from urllib.parse import urlencode

from multidict import CIMultiDict
from yarl import URL

from microcall._body import Body, describe, source_of
from microcall._checks import (
    FRAMING_HEADERS,
    absolute_url,
    check_body_text,
    check_call,
    check_framing,
    check_headers,
    check_query_name,
    check_target,
    query_text,
    refuse_client_framing,
)
from microcall._clock import MONOTONIC
from microcall._durations import Seconds, to_seconds
from microcall._engine import (
    DEFAULT_DEADLINE_FLOOR,
    DEFAULT_MAX_CALLS,
    Engine,
)
from microcall._group import endpoint_policies
from microcall._limits import Limits
from microcall._multipart import multipart_body
from microcall._redact import shown_url
from microcall._replicas import Discovery, Replicas
from microcall._request import IDEMPOTENT_METHODS, Request, endpoint_of
from microcall._response import Response, validate
from microcall._typed import jsonable
from microcall._validate import items, positive_int
from microcall._wire import IDEMPOTENCY_KEY_HEADER, PRIORITY_HEADER, TIMEOUT_HEADER
from microcall.cache import CachePolicy, ResponseCache
from microcall.client._auth import BasicAuth, to_auth, url_credentials
from microcall.client._cookies import make_jar
from microcall.client._event_hooks import parse_hooks
from microcall.client._in_flight import CallsInFlight, Send
from microcall.client._options import BaseURL, CallOptions, ClientOptions, Params
from microcall.client._session import Session
from microcall.client._stream import AsyncStreamCall, BodyLimits, open_stream, refuse_unstreamable
from microcall.client._verbs import Verbs
from microcall.context import inherit_deadline, inherit_priority
from microcall.deadline import Deadline
from microcall.errors import ConfigurationError, MicrocallError, UsageError
from microcall.policy.balancer import BalancerConfig
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.classify import default_classifier
from microcall.policy.ejection import OutlierEjectionConfig
from microcall.policy.strategy import SINGLE, Strategy
from microcall.priority import Priority
from microcall.transports import default_transport

# Long enough for any ordinary call between services, short enough that a
# forgotten hung call is noticed; a client never waits forever by default.
DEFAULT_TIMEOUT = 10.0

# Relative paths whose parsed URL is kept (see AsyncClient._locate).
_LOCATED_MAX = 1024
_ENGINE_HEADERS = frozenset({TIMEOUT_HEADER.lower(), PRIORITY_HEADER.lower()})
# Headers a caller gives that need more than the check every header gets.
_SPECIAL_HEADERS = _ENGINE_HEADERS | FRAMING_HEADERS
CLIENT_OPTIONS = frozenset(ClientOptions.__annotations__)
_CALL_OPTIONS = frozenset(CallOptions.__annotations__)


def check_options(given: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigurationError(
            f"{where} got unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


class AsyncClient(Verbs[Coroutine[Any, Any, Response]]):
    """Calls other services from asyncio code.

    ::

        async with microcall.AsyncClient("http://catalog:8080", timeout=2.0,
                                         strategy=microcall.hedged(0.05)) as client:
            response = await client.get("/books", params={"category": "mystery"})
            books = response.raise_for_status().json()

    One client holds one connection pool; share it across the whole
    application rather than making one per call. ``cookies=``, ``auth=`` and
    ``hooks=`` work around every call whatever the transport (see
    docs/http-features.md).
    """

    def __init__(self, base_url: BaseURL | None = None, **options: Unpack[ClientOptions]) -> None:
        check_options(options, CLIENT_OPTIONS, "AsyncClient")
        self._options = options
        bases, discovery, credentials = _base_urls(base_url)
        self._base = bases[0] if bases else None
        self._base_text = "" if self._base is None else str(self._base).rstrip("/") + "/"
        self._base_path_length = 0 if self._base is None else len(self._base.raw_path)
        self._headers = _own_headers(options.get("headers"))
        self._keyed = IDEMPOTENCY_KEY_HEADER in CIMultiDict(self._headers)
        self._located: dict[str, tuple[URL, str | None, str]] = {}
        self._bare: dict[tuple[str, str], Request] = {}
        self._timeout = to_seconds(options.get("timeout", DEFAULT_TIMEOUT), name="timeout")
        strategy = options.get("strategy", SINGLE)
        if not callable(getattr(strategy, "plan", None)):
            raise ConfigurationError(
                f"strategy must come from single(), retry() or hedged(), got {strategy!r}"
            )
        self._strategy = strategy
        chosen_priority = options.get("priority")
        # None: calls carry no priority of their own, and the server applies its default.
        self._priority = None if chosen_priority is None else Priority.parse(chosen_priority).value
        classifier = options.get("classifier", default_classifier)
        if not callable(classifier):
            raise ConfigurationError(f"classifier must be callable, got {classifier!r}")
        floor = to_seconds(
            options.get("deadline_floor", DEFAULT_DEADLINE_FLOOR), name="deadline_floor"
        )
        max_calls = options.get("max_calls", DEFAULT_MAX_CALLS)
        positive_int(
            "max_calls", max_calls, what="an int (calls a client holds, in flight plus queued)"
        )
        given_transport = options.get("transport")
        limits = options.get("limits")
        if given_transport is not None and ("proxy" in options or "trust_env" in options):
            # Silently going direct would be worse than refusing.
            raise ConfigurationError(
                "proxy= and trust_env= configure the default transport; a transport "
                "given ready-made takes them itself (H1Transport(proxy=...), ...)"
            )
        transport = given_transport or default_transport(
            limits=limits,
            verify=options.get("verify", True),
            follow_redirects=options.get("follow_redirects", True),
            proxy=options.get("proxy"),
            trust_env=options.get("trust_env", False),
        )
        # With its own pool, calls past its size would wait for a connection
        # anyway: they wait in the client's queue instead, where the time
        # they waited comes off what is sent downstream. A transport given
        # ready-made keeps its own counsel (HTTP/2 multiplexes many calls
        # on one connection).
        slots = None if given_transport else (limits or Limits()).max_connections
        if given_transport is not None and not (
            callable(getattr(given_transport, "send", None))
            and callable(getattr(given_transport, "aclose", None))
        ):
            raise ConfigurationError(
                f"transport must be a microcall.transports.Transport, got {given_transport!r}"
            )
        self._clock = options.get("clock", MONOTONIC)
        if not callable(getattr(self._clock, "now", None)):
            raise ConfigurationError(f"clock must have a now() method, got {self._clock!r}")
        balancer, breaker, ejection = endpoint_policies(
            options.get("balancer") or BalancerConfig(),
            options.get("breaker"),
            options.get("ejection", OutlierEjectionConfig()),
        )
        # The real clock read straight: a call reads it three times.
        self._now = time.monotonic if self._clock is MONOTONIC else self._clock.now
        replicas = (
            None
            if not bases
            else Replicas(
                bases,
                balancer=balancer,
                breaker=breaker,
                ejection=ejection,
                discovery=discovery,
                # An injected clock (a test's) has no stalls of the loop to see.
                watch_loop=self._clock is MONOTONIC,
            )
        )
        budget = options.get("budget", RetryBudgetConfig())
        if budget is not None and not isinstance(budget, (RetryBudgetConfig, RetryBudget)):
            raise ConfigurationError(
                f"budget must be a RetryBudgetConfig, a RetryBudget or None, got {budget!r}"
            )
        observers = items("observers", options.get("observers", ()))
        for observer in observers:
            if not callable(getattr(observer, "call_started", None)):
                raise ConfigurationError(
                    f"observers must implement microcall.observe.Observer, got {observer!r}"
                )
        self._engine = Engine(
            transport,
            classifier=classifier,
            replicas=replicas,
            budget=RetryBudget(budget) if isinstance(budget, RetryBudgetConfig) else budget,
            now=self._now,
            floor=floor,
            observers=observers,
            max_calls=max_calls,
            slots=slots,
        )
        if replicas is not None:
            # Observers that follow breakers and ejections subscribe to this
            # client's endpoint group themselves (a Client re-created after
            # fork subscribes again).
            for observer in self._engine.observers:
                watch = getattr(observer, "watch", None)
                if callable(watch):
                    watch(replicas)
        cache = options.get("cache")
        if cache is not None and not isinstance(cache, ResponseCache):
            raise ConfigurationError(
                f"cache must be a microcall.cache.ResponseCache or None, got {cache!r}"
            )
        self._cache = cache
        if self._cache is not None:
            # Observers that count cache answers subscribe to the client's cache.
            for observer in self._engine.observers:
                answered = getattr(observer, "cache_answered", None)
                if callable(answered) and answered not in self._cache.events:
                    self._cache.events.append(answered)
        # Cookies, credentials and hooks: around the engine, whatever the transport.
        self._session = Session(
            jar=make_jar(options.get("cookies"), self._base),
            # User-info in the base URL is the client's Basic credentials
            # unless auth= gives others.
            auth=to_auth(options.get("auth")) or credentials,
            hooks=parse_hooks(options.get("hooks")),
            now=self._now,
            finish_headers=_call_headers,
            replica_bases=partial(_replica_bases, replicas),
        )
        self._closed = False
        self._in_flight = CallsInFlight()

    @property
    def base_url(self) -> URL | None:
        """The first base URL (calls to relative URLs are balanced over all of them)."""
        return self._base

    @property
    def replicas(self) -> Replicas | None:
        """The endpoint group: balancer, breakers and ejection state, for inspection."""
        return self._engine.replicas

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache (None: calls are not cached)."""
        return self._cache

    @property
    def cookies(self) -> CookieJar | None:
        """The client's cookie jar (None: made without ``cookies=``, no cookie is kept)."""
        return self._session.jar

    @property
    def held(self) -> int:
        """Calls this client holds now: in flight plus queued for a slot (at most ``max_calls``)."""
        return self._engine.admission.held

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget shared by this client's calls (None when disabled)."""
        return self._engine.budget

    def request(
        self, method: str, url: str | URL, **options: Unpack[CallOptions]
    ) -> Coroutine[Any, Any, Response]:
        """Send a call and return its response (any status); raise a CallError if none came.

        The call is built when ``request`` (or a verb) is called, so bad
        arguments raise at once and the deadline starts then; awaiting the
        returned coroutine sends it.
        """
        if self._closed:
            raise UsageError("this client is closed")
        if type(method) is not str:  # the type alone: this runs on every call
            raise UsageError(f"a method must be a str such as 'GET', got {method!r}")
        method = method.upper()
        if options:
            check_options(options, _CALL_OPTIONS, "request")
            request = self._build(method, url, options)
            expires_at = self._expires_at(options)
            priority = self._priority_of(options)
            strategy = options.get("strategy", self._strategy)
            model = options.get("response_model")
            chosen = options.get("cache", True)
            call: Send = self._engine.call
            send = call
            if model is not None or chosen is not True or self._cache is not None:
                send = partial(self._call_with, chosen=chosen, model=model)
            # Cookies, auth and hooks: the client's, or the call's own.
            send = self._session.around(send, options)
            engine = self._engine if send is call else None  # nothing answers without a slot
            return self._in_flight.guard(send, request, expires_at, priority, strategy, engine)
        else:  # the common call: nothing but a URL
            request = self._bare_request(method, url)
            expires_at = inherit_deadline(self._now() + self._timeout)
            priority = inherit_priority(self._priority)
            strategy = self._strategy
        if self._cache is None and not self._session.active:
            engine = self._engine
            return self._in_flight.guard(
                engine.call, request, expires_at, priority, strategy, engine
            )
        send = self._engine.call
        if self._cache is not None:
            send = partial(self._call_with, chosen=True, model=None)
        send = self._session.around(send, None)
        return self._in_flight.guard(send, request, expires_at, priority, strategy)

    def stream(
        self,
        method: str,
        url: str | URL,
        *,
        idle_timeout: Seconds | None = None,
        body_timeout: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncStreamCall:
        """A call whose body is read as it arrives: ``async with client.stream(...) as response``.

        ::

            async with client.stream("GET", "/events", idle_timeout=30) as response:
                async for event in response.aiter_sse():
                    print(event.event, event.data)

        The call is built and checked now, and sent when the block is
        entered; the block gets an :class:`~microcall.AsyncStreamResponse`
        as soon as the head has arrived. Retries and hedges happen only
        before that, on the status and headers; never once the body is the
        caller's. Leaving the block closes the stream: the connection goes
        back to the pool if the body was read to its end, else it is closed.
        A streamed response is never cached.

        Time: the call's deadline covers the head and the whole body, unless
        ``body_timeout`` gives the body its own seconds from the head's
        arrival (the deadline then covers the head only; ``math.inf`` with an
        ``idle_timeout``: no body deadline). ``idle_timeout`` bounds each
        wait for the body's next bytes. docs/streaming.md has the details.
        """
        if self._closed:
            raise UsageError("this client is closed")
        if type(method) is not str:
            raise UsageError(f"a method must be a str such as 'GET', got {method!r}")
        check_options(options, _CALL_OPTIONS, "stream")
        refuse_unstreamable(options)
        limits = BodyLimits.of(body_timeout, idle_timeout)
        request = dataclasses.replace(self._build(method.upper(), url, options), stream=True)
        return AsyncStreamCall(
            partial(
                open_stream,
                self._in_flight,
                # Never the cache (a stream is not stored); cookies, auth and hooks as any call.
                self._session.around(self._engine.call, options),
                self._now,
                request,
                self._expires_at(options),
                self._priority_of(options),
                options.get("strategy", self._strategy),
                limits,
            )
        )

    def _bare_request(self, method: str, url: str | URL) -> Request:
        """The Request of a call given nothing but its URL: one per method and path, reused.

        Such a request depends on nothing but the two (a Request is never
        changed once built), and building one is a good part of a call's own cost.
        """
        key = (method, url) if isinstance(url, str) else None
        if key is not None:
            known = self._bare.get(key)
            if known is not None:
                return known
        # Checked here, once per method and URL: a known request was checked when built.
        check_call(method, url)
        try:
            target, path, endpoint = self._locate(url)
        except ValueError as exc:  # yarl refusing it (a port out of range, a broken IPv6 host)
            raise UsageError(f"invalid URL {shown_url(url)!r}: {exc}") from None
        headers = self._headers
        if path is None:  # not a path under the (checked) base URL
            check_target(target)
            if target.raw_user is not None:
                target, headers = _with_credentials(target, headers)
        replayable = method in IDEMPOTENT_METHODS or self._keyed
        request = Request(method, target, headers, None, replayable, path, method, endpoint)
        if key is not None and path is not None:
            if len(self._bare) >= _LOCATED_MAX:
                self._bare.clear()
            self._bare[key] = request
        return request

    def _locate(self, url: str | URL) -> tuple[URL, str | None, str]:
        """Target URL, path relative to the base, endpoint name: cached per relative path.

        Services call a small set of paths over and over; parsing each once
        saves a URL parse per call. The cache is bounded: it is emptied when full.
        """
        if isinstance(url, str):
            known = self._located.get(url)
            if known is not None:
                return known
        target = self._resolve(url)
        located = (target, self._path_of(url, target), endpoint_of(target))
        if isinstance(url, str) and located[1] is not None:
            if len(self._located) >= _LOCATED_MAX:
                self._located.clear()
            self._located[url] = located
        return located

    async def _call_with(
        self,
        request: Request,
        expires_at: float,
        priority: str | None,
        strategy: Strategy,
        chosen: bool | CachePolicy,
        model: Any,
    ) -> Response:
        """A call with a per-call cache choice or a response model."""
        cache = self._cache
        policy: CachePolicy | None = None
        if chosen is False:
            cache = None
        elif isinstance(chosen, CachePolicy):
            if cache is None:
                raise UsageError("cache=CachePolicy(...) needs a client made with cache=")
            policy = chosen
        elif chosen is not True:
            raise UsageError(f"cache= takes True, False or a CachePolicy, got {chosen!r}")
        if cache is not None:
            send = partial(
                self._engine.call, expires_at=expires_at, priority=priority, strategy=strategy
            )
            response = await cache.call(
                request, send, policy=policy, timeout=expires_at - self._now()
            )
        else:
            response = await self._engine.call(
                request, expires_at=expires_at, priority=priority, strategy=strategy
            )
        if (
            model is not None
            and 200 <= response.status_code < 300
            and response.status_code != 204
            and request.method != "HEAD"
        ):
            response.parsed = validate(response, model)
        return response

    async def aclose(self) -> None:
        """Close the connection pool (and the cache's connections); later calls raise UsageError.

        Calls still in flight are stopped first: each raises ClientClosed.
        """
        self._closed = True
        # Always: streams opened by this client learn from it that their
        # bodies were cut by the closing (ClientClosed), not by the server.
        await self._in_flight.stop()
        await self._engine.aclose()
        await self._engine.transport.aclose()
        # The cache is its creator's to close (ResponseCache.aclose): others may share it.

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------ building a call

    def _build(self, method: str, url: str | URL, options: CallOptions) -> Request:
        # Everything a request is made of is checked here, before anything is
        # sent (microcall._checks says what HTTP can carry, and why).
        check_call(method, url)
        try:
            target = self._resolve(url)
        except ValueError as exc:  # yarl refusing it (a port out of range, a broken IPv6 host)
            raise UsageError(f"invalid URL {shown_url(url)!r}: {exc}") from None
        headers = self._headers
        if self._base is None or not isinstance(url, str) or "://" in url:
            check_target(target)  # a path under the base URL has the base's (checked) host
            if target.raw_user is not None:
                target, headers = _with_credentials(target, headers)
        params = options.get("params")
        if params:
            target = target.extend_query(_query_pairs(params))
        extra = options.get("headers")
        body, content_type = _encode_body(options)
        keyed = self._keyed
        if extra or content_type:
            merged = CIMultiDict(headers)
            if content_type:
                merged["Content-Type"] = content_type
            if extra:
                merged.update(_own_headers(extra, UsageError, body))
            keyed = IDEMPOTENCY_KEY_HEADER in merged
            headers = dict(merged)
        idempotent = options.get("idempotent")
        replayable = (method in IDEMPOTENT_METHODS or keyed) if idempotent is None else idempotent
        route = options.get("route") or method
        path = self._path_of(url, target)
        return Request(method, target, headers, body, replayable, path, route, endpoint_of(target))

    def _path_of(self, given: str | URL, target: URL) -> str | None:
        """The part of ``target`` after the base, when ``given`` was relative to it."""
        if self._base is None or isinstance(given, URL) or "://" in given:
            return None
        return target.raw_path_qs[self._base_path_length :]

    def _resolve(self, url: str | URL) -> URL:
        if isinstance(url, URL):
            target = url
        elif self._base is not None and "://" not in url:
            return URL(self._base_text + url.lstrip("/"))
        else:
            target = URL(url)
        if not target.absolute:
            if self._base is None:
                raise UsageError(f"relative URL {shown_url(target)!r} needs a client base_url")
            return self._base.join(target)
        return target

    def deadline_for(self, options: CallOptions) -> Deadline:
        """The deadline a call with ``options`` would get if it started now."""
        return Deadline(self._expires_at(options), clock=self._clock)

    def _expires_at(self, options: CallOptions) -> float:
        timeout = options.get("timeout")
        explicit = options.get("deadline")
        if explicit is not None and not isinstance(explicit, Deadline):
            raise UsageError(
                "deadline= takes a microcall.Deadline (seconds go in timeout=), "
                f"got {type(explicit).__name__}"
            )
        if timeout is not None:
            expires_at = self._now() + to_seconds(timeout, name="timeout", allow_zero=True)
            if explicit is not None and explicit.expires_at < expires_at:
                expires_at = explicit.expires_at
        elif explicit is not None:
            expires_at = explicit.expires_at
        else:
            expires_at = self._now() + self._timeout
        return inherit_deadline(expires_at)

    def _priority_of(self, options: CallOptions) -> str | None:
        chosen = options.get("priority")
        if chosen is not None:
            return Priority.parse(chosen).value
        return inherit_priority(self._priority)


def _base_urls(value: BaseURL | None) -> tuple[list[URL], Discovery | None, BasicAuth | None]:
    """The base URLs without user-info, their discovery, and the first user-info as credentials."""
    if value is None:
        return [], None, None
    if isinstance(value, Discovery):
        base, credentials = url_credentials(_base_url(value.url), ConfigurationError)
        return [base], value, credentials
    if isinstance(value, (str, URL)):
        given = [value]
    elif isinstance(value, Sequence):
        given = list(value)
    else:
        raise ConfigurationError(
            f"base_url must be a URL, a list of URLs or a Discovery, not {type(value).__name__}"
        )
    if not given:
        raise ConfigurationError("base_url needs at least one URL")
    found = [url_credentials(_base_url(one), ConfigurationError) for one in given]
    bases = [base for base, _ in found]
    if len({base.raw_path for base in bases}) > 1:
        raise ConfigurationError(
            "the replicas of one client must share a path prefix, got "
            + ", ".join(shown_url(base) for base in bases)
        )
    return bases, None, next((credentials for _, credentials in found if credentials), None)


def _with_credentials(target: URL, headers: dict[str, str]) -> tuple[URL, dict[str, str]]:
    """A call's URL without its user-info, which goes as Basic credentials instead.

    The client's own ``Authorization`` header, and any ``auth=`` (applied
    later, as the call goes out), take precedence, as in requests.
    """
    target, credentials = url_credentials(target, UsageError)
    if credentials is None or any(name.lower() == "authorization" for name in headers):
        return target, headers
    return target, {**headers, "Authorization": credentials.header}


def _base_url(value: str | URL) -> URL:
    base = absolute_url("base_url", value)
    # A trailing slash makes "base + path" keep the base's own path prefix.
    return base if base.path.endswith("/") else base.with_path(base.path + "/")


def _replica_bases(replicas: Replicas | None) -> list[str]:
    """The base URLs of the replicas calls are balanced over now (a Discovery's change)."""
    return [] if replicas is None else [endpoint.address for endpoint in replicas.endpoints]


def _call_headers(headers: dict[str, str], body: bytes | Body | None) -> dict[str, str]:
    """Headers as the cookie jar, an auth flow and request hooks left them, checked as a call's."""
    return _own_headers(headers, UsageError, body)


def _own_headers(
    given: Mapping[str, str] | None,
    error: type[MicrocallError] = ConfigurationError,
    body: bytes | Body | None = None,
) -> dict[str, str]:
    """The caller's headers, checked, without the ones the engine owns (it sets them per attempt).

    A client's own headers (``error`` ConfigurationError: they are checked at
    construction) may not frame a body; a call's (``error`` UsageError) may
    only say what its ``body`` is.
    """
    if not given:
        return {}
    if type(given) is not dict and not isinstance(given, Mapping):  # the ABC check is slow
        raise error(f"headers= takes a mapping of names to values, got {type(given).__name__}")
    check_headers(given, error)
    own = {key: value for key, value in given.items() if key.lower() not in _SPECIAL_HEADERS}
    if len(own) < len(given):  # rare: an engine's header (dropped) or a framing one
        for key, value in given.items():
            lowered = key.lower()
            if lowered in FRAMING_HEADERS:
                if error is ConfigurationError:
                    refuse_client_framing(key, error)
                declared = check_framing(lowered, value, body)
                if isinstance(body, Body):
                    # A streamed body's length is the transport's to write.
                    body.length = declared if declared is not None else body.length
                else:
                    own[key] = value
    return own


def _query_pairs(params: Params, what: str = "params") -> list[tuple[str, str]]:
    """Query parameters (or form fields: ``what`` is "data") as checked text pairs."""
    if isinstance(params, Mapping):
        items: Any = params.items()
    elif isinstance(params, (list, tuple)):
        items = params
    else:
        raise UsageError(
            f"{what}= takes a mapping or a list of (name, value) pairs, got {type(params).__name__}"
        )
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not (type(item) is tuple or isinstance(item, list)) or len(item) != 2:
            raise UsageError(f"{what}= pairs are (name, value) tuples, got {item!r}")
        key, value = item
        # ASCII str (the usual) passes at once; anything else gets the full check.
        if type(key) is not str or not key.isascii():
            check_query_name(key, what)
        for one in value if isinstance(value, (list, tuple)) else (value,):
            if type(one) is str and one.isascii():
                pairs.append((key, one))
                continue
            text = query_text(key, one, what)
            if text is not None:  # as in requests: a None value drops the parameter
                pairs.append((key, text))
    return pairs


def _encode_body(options: CallOptions) -> tuple[bytes | Body | None, str | None]:
    # As in requests, json=None means "no JSON body", not the body "null".
    given = [name for name in ("json", "data", "content") if options.get(name) is not None]
    files = options.get("files")
    if files is not None:
        return _form_with_files(files, given, options)
    if not given:
        return None, None
    if len(given) > 1:
        raise UsageError(f"pass only one of json, data and content, not {' and '.join(given)}")
    if "json" in options:
        try:
            # default=jsonable: pydantic models anywhere in the value are sent as
            # their JSON form. allow_nan=False: NaN and Infinity are not JSON
            # (RFC 8259 section 6), and most parsers refuse them.
            encoded = _json.dumps(
                options["json"],
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
                default=jsonable,
            )
        except (TypeError, ValueError, RecursionError) as exc:
            hint = " (NaN and Infinity are not JSON)" if "float" in str(exc) else ""
            raise UsageError(f"json= cannot be sent as JSON: {exc}{hint}") from exc
        return check_body_text(encoded, "json="), "application/json"
    name = given[0]
    value = options.get("data", options.get("content"))
    if isinstance(value, Mapping):
        form = urlencode(_query_pairs(value, "data"))
        return form.encode(), "application/x-www-form-urlencoded"
    if isinstance(value, str):
        return check_body_text(value, f"{name}="), None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    return _streamed(value, name), None


def _streamed(value: object, name: str) -> Body:
    """A body read from a file or an iterator while it is sent (microcall._body)."""
    what = f"{name}= ({describe(value)})"
    found = source_of(value, what)
    if found is None:
        raise UsageError(
            f"a body must be bytes, str, a form mapping, a file opened 'rb', an object with "
            f"async read(), or an iterator or async iterator of bytes; got {type(value).__name__}"
        )
    source, length = found
    return Body(source, length, what)


def _form_with_files(files: Any, given: list[str], options: CallOptions) -> tuple[Body, str]:
    """A multipart/form-data body: ``files=``, with ``data=`` fields alongside."""
    others = [name for name in given if name != "data"]
    if others:
        raise UsageError(f"files= goes with data= (form fields), not {' and '.join(others)}")
    data = options.get("data")
    if data is not None and not isinstance(data, (Mapping, list, tuple)):
        raise UsageError(
            f"with files=, data= holds form fields (a mapping or (name, value) pairs), "
            f"got {type(data).__name__}"
        )
    fields = _query_pairs(data, "data") if data else []
    return multipart_body(fields, files)
