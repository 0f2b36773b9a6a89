"""What a client is configured with, and what a call may override: typed once, for all front doors."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from yarl import URL

from microcall._body import Content
from microcall._clock import Clock
from microcall._durations import Seconds
from microcall._limits import Limits
from microcall._multipart import Files
from microcall._replicas import Discovery
from microcall.cache import CachePolicy, ResponseCache
from microcall.client._auth import AuthOption
from microcall.client._cookies import CookiesOption
from microcall.client._event_hooks import EventHooks
from microcall.deadline import Deadline
from microcall.observe.hooks import Observer
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.classify import Classifier
from microcall.policy.ejection import OutlierEjectionConfig
from microcall.policy.strategy import Strategy
from microcall.priority import Priority
from microcall.transports import Transport

BaseURL = str | URL | Sequence[str | URL] | Discovery
"""One base URL, several (replicas of one service), or a Discovery (a DNS name)."""

QueryValue = str | int | float | bool | None
Params = Mapping[str, QueryValue | list[QueryValue]] | list[tuple[str, QueryValue]]


class ClientOptions(TypedDict, total=False):
    """Keyword arguments every front door's constructor takes.

    headers:          sent with every call (a call's own headers win)
    timeout:          default total deadline of a call, seconds (never infinite)
    strategy:         default strategy: ``single()``, ``retry(...)``, ``hedged(...)``
    priority:         priority when neither call nor context gives one (default: none
                      sent, so the server's own default applies)
    limits:           connection pool limits (total, per host, keep-alive)
    classifier:       ``classifier(response, error) -> Verdict``
    transport:        a Transport; default microcall's own (docs/transports.md), built with
                      ``limits``, ``verify``, ``follow_redirects``, ``proxy`` and ``trust_env``
    verify:           TLS verification: True (default), False, or an SSLContext
    follow_redirects: follow 3xx redirects (default True)
    proxy:            a forward proxy for every call, ``http://[user:password@]host:port``
                      (default None: calls go direct); HTTPS targets go through it with
                      CONNECT (docs/proxies.md)
    trust_env:        True: the environment's HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and
                      NO_PROXY decide, read when the client is built (default False:
                      the environment is ignored)
    deadline_floor:   no attempt starts with less than this left (default 5 ms)
    clock:            the clock policies read (tests pass a FakeClock)
    budget:           retry budget (RetryBudgetConfig() by default; a RetryBudget to
                      share one between clients; None: no budget)
    breaker:          a CircuitBreakerConfig for a breaker per endpoint (default: none)
    balancer:         BalancerConfig: peak-EWMA power of two choices, or round robin
    ejection:         OutlierEjectionConfig (default Envoy's; None: never eject)
    observers:        metrics and tracing backends (microcall.observe.Observer)
    cache:            a microcall.cache.ResponseCache for GET / HEAD answers (default
                      None: no caching); closed (its connections) with the client
    max_calls:        calls the client holds at once, in flight plus queued (default
                      1,000); past it a call fails at once with ClientOverloaded
    cookies:          a cookie jar (default none: no cookie is kept): True for an empty
                      one, ``{name: value}`` for one holding these for the base URL's
                      host, or an ``http.cookiejar.CookieJar`` used as given
    auth:             credentials for every call: BasicAuth, BearerAuth, a flow of your
                      own (an Auth subclass) or a ``(user, password)`` tuple (Basic)
    hooks:            ``{"request": [...], "response": [...]}`` called around every call
                      (plain functions on Client and FuturesClient; async ones too on
                      AsyncClient)
    """

    headers: Mapping[str, str]
    timeout: Seconds
    strategy: Strategy
    priority: Priority | str
    limits: Limits
    classifier: Classifier
    transport: Transport
    verify: bool | ssl.SSLContext
    follow_redirects: bool
    proxy: str | URL | None
    trust_env: bool
    deadline_floor: Seconds
    clock: Clock
    budget: RetryBudgetConfig | RetryBudget | None
    breaker: CircuitBreakerConfig | None
    balancer: BalancerConfig
    ejection: OutlierEjectionConfig | None
    observers: Sequence[Observer]
    cache: ResponseCache | None
    max_calls: int
    cookies: CookiesOption
    auth: AuthOption
    hooks: EventHooks


class CallOptions(TypedDict, total=False):
    """Keyword arguments every call takes (``get``, ``post``, ... and ``request``).

    params:     query parameters, added to those already in the URL
    headers:    extra headers for this call
    json:       a value sent as a JSON body
    data:       a form (dict, url-encoded; with ``files=``, the form's fields), or a
                body as ``content=`` takes it
    content:    the body: bytes or str (held, replayed by every attempt), or read
                while it is sent: a file opened 'rb' (a seekable one is replayed from
                where it stood), an object with ``async read(n)``, an iterator or
                async iterator of bytes (read once: the call makes one attempt, and
                its retries and hedges are refused with "body cannot be replayed").
                Sent with its Content-Length when known (a file's size, or a
                ``Content-Length`` header given), chunked otherwise
    files:      a multipart/form-data body: ``{"name": content}`` or
                ``{"name": (filename, content, content_type)}`` (or a list of
                ``(name, ...)`` pairs), content as for ``content=``; file parts
                stream. docs/uploads.md has examples
    timeout:    this call's total deadline in seconds (instead of the client's default)
    deadline:   an explicit Deadline (shared with other calls, say)
    priority:   this call's priority
    strategy:   this call's strategy
    idempotent: True lets a POST / PATCH retry and hedge; False forbids it for any method
    route:      the route template ("GET /books/{id}") learned hedge delays are kept by;
                default: the method
    cache:      False: this call neither reads nor fills the client's cache; a
                CachePolicy: the one to use for this call (True: the cache's own)
    response_model: a pydantic model (or ``list[Model]``...): a 2xx body (not 204,
                not HEAD) is validated into it, as ``response.parsed``; a body
                that does not fit raises ResponseValidationError
    auth:       this call's credentials instead of the client's (None: none)
    cookies:    ``{name: value}`` sent with this call besides the jar's (a call's
                cookie wins over the jar's of the same name); never stored
    hooks:      more hooks for this call, run after the client's
    """

    params: Params
    headers: Mapping[str, str]
    json: Any
    data: Mapping[str, Any] | Content
    content: Content
    files: Files
    timeout: Seconds
    deadline: Deadline
    priority: Priority | str
    strategy: Strategy
    idempotent: bool
    route: str
    cache: bool | CachePolicy
    response_model: Any
    auth: AuthOption
    cookies: Mapping[str, str]
    hooks: EventHooks
