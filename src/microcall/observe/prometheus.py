"""Prometheus metrics for microcall clients and servers, named after OpenTelemetry's conventions.

Nothing is registered when this module is imported: a :class:`ClientMetrics`
or :class:`ServerMetrics` registers its families in the registry it is given
(the global one by default) when it is built. Build one of each per registry
and share it: pass the same ``ClientMetrics`` to every client, the same
``ServerMetrics`` to every middleware::

    from microcall.observe.prometheus import ClientMetrics, ServerMetrics

    client_metrics = ClientMetrics()
    catalog = microcall.AsyncClient("http://catalog:8080", observers=[client_metrics])
    # (the client hands it its endpoints, so breaker states and ejections count too)

    app = ASGIMiddleware(app, ServerOptions(observers=[ServerMetrics()]))

Client families (``http.*`` names and labels as OpenTelemetry's semantic
conventions export them to Prometheus; ``microcall_*`` ones are microcall's)::

    http_client_request_duration_seconds     logical calls: every attempt and wait
        http_request_method server_address server_port http_response_status_code error_type
    microcall_client_attempt_duration_seconds   each attempt sent (+ attempt_kind)
    microcall_client_attempts_total           attempts sent, by attempt_kind (first, retry, hedge)
    microcall_client_attempts_refused_total   attempts not sent, by reason
                                              (retry_budget, hedge_budget, circuit_open)
    microcall_client_connection_resends_total   requests sent again on a fresh connection
                                              because their reused one was dead (no budget spent)
    http_client_active_requests               logical calls in flight
    microcall_client_breaker_state            1 for an endpoint's current state, 0 for the others
    microcall_client_breaker_transitions_total   state changes, by the state entered
    microcall_client_ejections_total          outlier ejections
    microcall_client_cache_lookups_total      cacheable calls by how the cache answered
                                              (http_request_method, status: hit, miss, ...)
    rpc_client_call_duration_seconds          gRPC calls (rpc_system rpc_service rpc_method
                                              rpc_grpc_status_code server_address server_port
                                              error_type)

Server families::

    http_server_request_duration_seconds      http_request_method http_route
                                              http_response_status_code error_type
    http_server_active_requests               by http_request_method
    microcall_server_expired_total            refused as expired on arrival, by priority
    microcall_server_shed_total               shed by the concurrency limit, by priority
    rpc_server_call_duration_seconds          rpc_system rpc_service rpc_method rpc_grpc_status_code
    rpc_server_active_calls                   gRPC calls being served

A ``ClientMetrics`` or ``ServerMetrics`` is one collector in its registry:
``registry.unregister(metrics)`` removes all its families. The families that
move on every call or request are kept by :mod:`~microcall.observe._series`
(plain per-thread numbers, no lock, summed when Prometheus scrapes; under
prometheus-client's multiprocess mode, its own metrics in the shared
directory's files, which add up every worker process); the breaker and
ejection families are prometheus-client's own. Either way a
scraper reads the same samples prometheus-client's ``Histogram``,
``Counter`` and ``Gauge`` would give it.

Every label value comes from a small fixed set whatever the network sends:
see ``_labels``. ``server_address`` is the host of the client's own base URL
(or of a replica of it); a call to an absolute URL elsewhere is labelled
``_OTHER`` unless its host is listed in ``server_addresses``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.cache._stats import CacheEvent
from microcall.errors import ConfigurationError, UsageError
from microcall.observe._buckets import DURATION_BUCKETS
from microcall.observe._labels import (
    GRPC_CODE_NUMBERS,
    KNOWN_METHODS,
    OTHER,
    RPC_SYSTEMS,
    client_error_type,
    grpc_code_of,
    grpc_status_label,
    method_label,
    route_label,
    server_error_type,
    split_rpc_method,
    status_label,
)
from microcall.observe._redact import host_port
from microcall.observe._series import Counts, Moves, Observes, SeriesCollector
from microcall.observe.hooks import InboundRequest, ServerResult
from microcall.policy.breaker import BreakerState, BreakerStateChange
from microcall.policy.ejection import Ejection

__all__ = ["ClientMetrics", "ServerMetrics"]

_CLIENT_LABELS = ("http_request_method", "server_address", "server_port")
_RESULT_LABELS = ("http_response_status_code", "error_type")
_RPC_LABELS = ("rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code")
_ENDPOINT_LABELS = ("server_address", "server_port")

# What the engine writes in Attempt.error for an attempt it did not send.
_REFUSALS: Final = {
    "retry budget empty": "retry_budget",
    "hedge budget empty": "hedge_budget",
    "CircuitOpen": "circuit_open",
}


# A client names the gRPC methods it calls in code, but a generic proxy may
# forward whatever names arrive: past this many, new methods count as _OTHER.
MAX_RPC_METHODS: Final = 1000


def _register(registry: CollectorRegistry, collector: Collector) -> None:
    try:
        registry.register(collector)
    except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
        raise ConfigurationError(
            f"{exc}: build one metrics object per registry and share it between clients "
            "(or middlewares), or pass a registry of your own"
        ) from exc


class ClientMetrics:
    """Client metrics: pass it in a client's ``observers=``, share it between clients.

    ``registry``: where the families are registered (default: the global
    one). ``server_addresses``: hosts that calls by absolute URL may name in
    the ``server_address`` label; other absolute URLs count as ``_OTHER``.
    It registers itself in ``registry`` as one collector (a second one in
    the same registry raises ``ConfigurationError``);
    ``registry.unregister(metrics)`` takes all its families out.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        server_addresses: Iterable[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self._known_hosts = frozenset(server_addresses)
        result = (*_CLIENT_LABELS, *_RESULT_LABELS)
        # Every call moves the sharded families; breakers and ejections are
        # rare events, and a gauge that is set stays prometheus-client's.
        families = self._families = SeriesCollector()
        self.call_duration = families.histogram(
            "http_client_request_duration_seconds",
            "Duration of logical HTTP calls: every attempt, backoff and hedge included.",
            result,
            buckets=buckets,
        )
        self.attempt_duration = families.histogram(
            "microcall_client_attempt_duration_seconds",
            "Duration of each attempt sent (a physical HTTP request).",
            (*_CLIENT_LABELS, "attempt_kind", *_RESULT_LABELS),
            buckets=buckets,
        )
        self.attempts = families.counter(
            "microcall_client_attempts",
            "Attempts sent, by kind: first, retry or hedge.",
            (*_CLIENT_LABELS, "attempt_kind"),
        )
        self.refused = families.counter(
            "microcall_client_attempts_refused",
            "Attempts not sent: the retry or hedge budget was empty, or a breaker open.",
            (*_CLIENT_LABELS, "attempt_kind", "reason"),
        )
        self.resends = families.counter(
            "microcall_client_connection_resends",
            "Requests sent again, inside their attempt, on a fresh connection because the "
            "reused keep-alive connection they were sent on was dead before any response byte.",
            _CLIENT_LABELS,
        )
        self.active = families.gauge(
            "http_client_active_requests", "Logical calls in flight.", _CLIENT_LABELS
        )
        self.breaker_state = families.include(
            Gauge(
                "microcall_client_breaker_state",
                "1 for the current state of an endpoint's circuit breaker, 0 for the others.",
                (*_ENDPOINT_LABELS, "state"),
                registry=None,
                # Each worker process has its breakers: one series per live
                # worker (a pid label) under multiprocess mode.
                multiprocess_mode="liveall",
            )
        )
        self.breaker_transitions = families.include(
            Counter(
                "microcall_client_breaker_transitions",
                "Circuit breaker state changes, by the state entered.",
                (*_ENDPOINT_LABELS, "state"),
                registry=None,
            )
        )
        self.ejections = families.include(
            Counter(
                "microcall_client_ejections",
                "Endpoints ejected by outlier detection.",
                _ENDPOINT_LABELS,
                registry=None,
            )
        )
        self.rpc_duration = families.histogram(
            "rpc_client_call_duration_seconds",
            "Duration of logical gRPC calls (and resilient callables' calls): every attempt, "
            "backoff and hedge included.",
            (*_RPC_LABELS, *_ENDPOINT_LABELS, "error_type"),
            buckets=buckets,
        )
        self.cache_lookups = families.counter(
            "microcall_client_cache_lookups",
            "Cacheable calls, by how the response cache answered them "
            "(hit, miss, revalidated, stale, coalesced).",
            ("http_request_method", "status"),
        )
        self._targets: dict[tuple[object, ...], _Target] = {}
        self._rpc_paths: set[str] = set()
        self._lock = threading.Lock()
        _register(registry, self)

    def describe(self) -> list[Metric]:
        """The families, without samples (how the registry knows their names)."""
        return self._families.describe()

    def collect(self) -> list[Metric]:
        """The families and their samples: what a scrape of the registry reads."""
        return self._families.collect()

    # ------------------------------------------------------------ the observer

    def call_started(self, request: Request) -> _CallMetrics:
        url = request.url
        host = url.raw_host
        relative = request.path is not None
        scheme = url.scheme
        method = request.method
        if method not in KNOWN_METHODS:
            method = OTHER
        # The key holds only what the labels will, so calls to ever new hosts
        # (or with made-up methods) share one target instead of growing the cache.
        key: tuple[object, ...]
        if relative or host in self._known_hosts:
            key = (method, scheme, host, url.port, relative)
        else:
            key = (method, scheme)
        rpc_path = None
        if scheme in RPC_SYSTEMS:
            rpc_path = self._rpc_path(url.raw_path)
            key = (*key, rpc_path)
        target = self._targets.get(key)
        if target is None:
            target = self._target(key, request, relative or host in self._known_hosts, rpc_path)
        target.active.inc()
        return _CallMetrics(target, time.perf_counter())

    def _rpc_path(self, path: str) -> str:
        """``path`` (``/package.Service/Method``) while few methods are known, then ``""``."""
        paths = self._rpc_paths
        if path in paths:
            return path
        with self._lock:
            if len(paths) < MAX_RPC_METHODS:
                paths.add(path)
                return path
        return ""  # labelled _OTHER

    def _target(
        self, key: tuple[object, ...], request: Request, known: bool, rpc_path: str | None
    ) -> _Target:
        url = request.url
        if known:
            address, port = url.raw_host or "", "" if url.port is None else str(url.port)
        else:
            address, port = OTHER, ""
        rpc = None if rpc_path is None else (RPC_SYSTEMS[url.scheme], *split_rpc_method(rpc_path))
        target = _Target(
            self, (method_label(request.method), address, port), request.path is not None, rpc
        )
        with self._lock:
            return self._targets.setdefault(key, target)

    # ------------------------------------------------------------ breakers, ejection

    def watch(self, client: object) -> None:
        """Count the breaker state changes and ejections of ``client``'s endpoints.

        ``client`` is an AsyncClient, Client or FuturesClient with a base URL
        (or its ``replicas``). Its endpoints' breakers are reported closed
        until they change; call it before the first call. Watching twice
        changes nothing.
        """
        replicas = _replicas_of(client)
        if self.ejected not in replicas.ejection_events:
            replicas.ejection_events.append(self.ejected)
        if self.breaker_changed in replicas.breaker_events:
            return  # already heard: the gauges are current
        replicas.breaker_events.append(self.breaker_changed)
        for endpoint in replicas.balancer.endpoints:
            if endpoint.breaker is not None:
                self._set_breaker_state(host_port(endpoint.address), BreakerState.CLOSED)

    def breaker_changed(self, event: BreakerStateChange) -> None:
        """A breaker listener: count ``event`` and move the state gauge."""
        endpoint = host_port(event.endpoint)
        self.breaker_transitions.labels(*endpoint, str(event.new)).inc()
        self._set_breaker_state(endpoint, event.new)

    def ejected(self, event: Ejection) -> None:
        """An ejection listener: count ``event``."""
        self.ejections.labels(*host_port(event.endpoint)).inc()

    def cache_answered(self, event: CacheEvent) -> None:
        """A response-cache listener: count how a cacheable call was answered.

        A client made with ``cache=`` and this observer subscribes it by itself.
        """
        self.cache_lookups.labels(method_label(event.method), str(event.status)).inc()

    def _set_breaker_state(self, endpoint: tuple[str, str], state: BreakerState) -> None:
        for each in BreakerState:
            self.breaker_state.labels(*endpoint, str(each)).set(1 if each is state else 0)


class _Target:
    """Label values and series for calls to one method and server.

    The series a call or an attempt lands in are cached here by the raw
    outcome (a status, an error's class), so a call costs a tuple and a dict
    lookup or two on top of the numbers it moves.
    """

    __slots__ = (
        "_attempts",
        "_endpoints",
        "_owner",
        "_refusals",
        "active",
        "calls",
        "labels",
        "relative",
        "rpc",
    )

    def __init__(
        self,
        owner: ClientMetrics,
        labels: tuple[str, str, str],
        relative: bool,
        rpc: tuple[str, str, str] | None,
    ) -> None:
        self._owner = owner
        self.labels = labels
        self.relative = relative
        self.rpc = rpc
        self.active = owner.active.labels(*labels)
        self.calls: dict[tuple[object, ...], Observes] = {}
        self._attempts: dict[tuple[object, ...], tuple[Counts, Observes]] = {}
        self._refusals: dict[tuple[object, ...], Counts] = {}
        self._endpoints: dict[str, tuple[str, str, str]] = {}

    def call_series(
        self, key: tuple[object, ...], response: Response | None, error: BaseException | None
    ) -> Observes:
        """The duration series of a call that ended so (``key``: its status and error class)."""
        owner = self._owner
        status = None if response is None else response.status_code
        if self.rpc is None:
            series = owner.call_duration.labels(
                *self.labels, status_label(status), client_error_type(status, error)
            )
        else:
            series = owner.rpc_duration.labels(
                *self.rpc,
                grpc_status_label(_grpc_code(error, status)),
                *self.labels[1:],
                "" if error is None else type(error).__name__,
            )
        self.calls[key] = series
        return series

    def attempt_ended(self, attempt: Attempt) -> None:
        endpoint = self.labels
        if self.relative and attempt.endpoint:
            endpoint = self._endpoints.get(attempt.endpoint) or self._endpoint(attempt.endpoint)
        kind = attempt.kind
        if not attempt.sent:
            self._refused(endpoint, kind, attempt.error)
            return
        key: tuple[object, ...]
        if attempt.error is None and not attempt.cancelled and type(attempt) is Attempt:
            # An HTTP attempt that got an answer: its error label follows from
            # the status, so the common case skips working it out.
            key = (endpoint, kind, attempt.status)
        else:
            key = (endpoint, kind, attempt.status, _attempt_error(attempt))
        pair = self._attempts.get(key)
        if pair is None:
            pair = self._attempt_series(key, endpoint, attempt)
        counted, timed = pair
        counted.inc()
        timed.observe(attempt.duration)
        if attempt.resent:
            self._owner.resends.labels(*endpoint).inc()

    def _attempt_series(
        self, key: tuple[object, ...], endpoint: tuple[str, str, str], attempt: Attempt
    ) -> tuple[Counts, Observes]:
        owner = self._owner
        kind = str(attempt.kind)
        pair = (
            owner.attempts.labels(*endpoint, kind),
            owner.attempt_duration.labels(
                *endpoint, kind, status_label(attempt.status), _attempt_error(attempt)
            ),
        )
        self._attempts[key] = pair
        return pair

    def _refused(self, endpoint: tuple[str, str, str], kind: AttemptKind, why: str | None) -> None:
        reason = _REFUSALS.get(why or "", OTHER)
        key = (endpoint, kind, reason)
        series = self._refusals.get(key)
        if series is None:
            series = self._owner.refused.labels(*endpoint, str(kind), reason)
            self._refusals[key] = series
        series.inc()

    def _endpoint(self, name: str) -> tuple[str, str, str]:
        """Labels for an attempt's endpoint: the replica it went to, for calls on the base URL."""
        labels = (self.labels[0], *host_port(name))
        self._endpoints[name] = labels
        return labels


class _CallMetrics:
    __slots__ = ("_start", "_target")

    def __init__(self, target: _Target, start: float) -> None:
        self._target = target
        self._start = start

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> None:
        # Attempts are counted from the call's record when it ends: the
        # engine times them, and refused ones appear only there.
        return None

    def call_ended(
        self,
        response: Response | None,
        error: BaseException | None,
        attempts: Sequence[Attempt],
    ) -> None:
        duration = time.perf_counter() - self._start
        target = self._target
        key = (
            None if response is None else response.status_code,
            None if error is None else type(error),
        )
        series = target.calls.get(key) or target.call_series(key, response, error)
        series.observe(duration)
        target.active.dec()
        for attempt in attempts:
            target.attempt_ended(attempt)


def _attempt_error(attempt: Attempt) -> str:
    if attempt.cancelled:
        return "cancelled"
    if attempt.error is not None:
        # "ConnectError: connection refused ..." -> "ConnectError"
        name = attempt.error.partition(":")[0]
        return name if name.isidentifier() else OTHER
    code = getattr(attempt, "code", None)  # a gRPC attempt's status name
    if code is not None and code != "OK":
        return code if code in GRPC_CODE_NUMBERS else OTHER
    return client_error_type(attempt.status, None)


def _grpc_code(error: BaseException | None, status: int | None) -> int | None:
    return status if error is None else grpc_code_of(error)


def _replicas_of(client: object) -> Any:
    replicas = getattr(client, "replicas", None)
    if replicas is None and hasattr(client, "breaker_events"):
        replicas = client
    if replicas is None:
        # Client and FuturesClient run an AsyncClient on their own loop.
        replicas = getattr(getattr(client, "_async", None), "replicas", None)
    if replicas is None:
        raise UsageError(
            f"{client!r} has no endpoint group to watch: only a client with a base URL has one"
        )
    return replicas


class ServerMetrics:
    """Server metrics: pass it in ``ServerOptions(observers=[...])``, share it between middlewares.

    Like :class:`ClientMetrics`, one collector in ``registry``:
    ``registry.unregister(metrics)`` takes all its families out.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        # Every family moves per request (the refusal counters under
        # overload, when cost matters most): all are sharded.
        families = self._families = SeriesCollector()
        self.duration = families.histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests served, refused ones included.",
            ("http_request_method", "http_route", *_RESULT_LABELS),
            buckets=buckets,
        )
        self.active = families.gauge(
            "http_server_active_requests", "HTTP requests being served.", ("http_request_method",)
        )
        self.expired = families.counter(
            "microcall_server_expired",
            "Requests refused because their deadline had passed on arrival.",
            ("priority",),
        )
        self.shed = families.counter(
            "microcall_server_shed", "Requests refused by the concurrency limit.", ("priority",)
        )
        self.deadline_exceeded = families.counter(
            "microcall_server_deadline_exceeded",
            "Requests answered as expired because a call of their handler ran out of their deadline.",
            ("priority",),
        )
        self.rpc_duration = families.histogram(
            "rpc_server_call_duration_seconds",
            "Duration of gRPC calls served, refused ones included.",
            _RPC_LABELS,
            buckets=buckets,
        )
        self.rpc_active = families.gauge(
            "rpc_server_active_calls", "gRPC calls being served.", ("rpc_system",)
        )
        _register(registry, self)

    def describe(self) -> list[Metric]:
        """The families, without samples (how the registry knows their names)."""
        return self._families.describe()

    def collect(self) -> list[Metric]:
        """The families and their samples: what a scrape of the registry reads."""
        return self._families.collect()

    def request_started(self, request: InboundRequest) -> _RequestMetrics:
        if request.protocol == "grpc":
            active = self.rpc_active.labels("grpc")
            method = request.method
        else:
            method = method_label(request.method)
            active = self.active.labels(method)
        active.inc()
        return _RequestMetrics(self, request.protocol, method, active, time.perf_counter())


class _RequestMetrics:
    __slots__ = ("_active", "_method", "_owner", "_protocol", "_start")

    def __init__(
        self, owner: ServerMetrics, protocol: str, method: str, active: Moves, start: float
    ) -> None:
        self._owner = owner
        self._protocol = protocol
        self._method = method
        self._active = active
        self._start = start

    def handler_done(self) -> None:
        pass

    def request_ended(self, result: ServerResult) -> None:
        duration = time.perf_counter() - self._start
        owner = self._owner
        self._active.dec()
        if self._protocol == "grpc":
            service, method = split_rpc_method(result.route)
            owner.rpc_duration.labels(
                "grpc", service, method, grpc_status_label(result.status)
            ).observe(duration)
        else:
            owner.duration.labels(
                self._method,
                route_label(result.route),
                status_label(result.status),
                server_error_type(result.status, result.error),
            ).observe(duration)
        if result.refused == "expired":
            owner.expired.labels(result.priority or OTHER).inc()
        elif result.refused == "shed":
            owner.shed.labels(result.priority or OTHER).inc()
        elif result.refused == "deadline":
            owner.deadline_exceeded.labels(result.priority or OTHER).inc()
