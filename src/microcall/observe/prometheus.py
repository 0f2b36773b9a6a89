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

Every label value comes from a small fixed set whatever the network sends:
see ``_labels``. ``server_address`` is the host of the client's own base URL
(or of a replica of it); a call to an absolute URL elsewhere is labelled
``_OTHER`` unless its host is listed in ``server_addresses``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.cache._stats import CacheEvent
from microcall.errors import ConfigurationError, UsageError
from microcall.observe._buckets import DURATION_BUCKETS
from microcall.observe._labels import (
    GRPC_CODE_NUMBERS,
    GRPC_SCHEMES,
    OTHER,
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


def _register(build: Callable[[], Any]) -> Any:
    try:
        return build()
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
        buckets = tuple(buckets)
        result = (*_CLIENT_LABELS, *_RESULT_LABELS)

        def families() -> tuple[Any, ...]:
            return (
                Histogram(
                    "http_client_request_duration_seconds",
                    "Duration of logical HTTP calls: every attempt, backoff and hedge included.",
                    result,
                    registry=registry,
                    buckets=buckets,
                ),
                Histogram(
                    "microcall_client_attempt_duration_seconds",
                    "Duration of each attempt sent (a physical HTTP request).",
                    (*_CLIENT_LABELS, "attempt_kind", *_RESULT_LABELS),
                    registry=registry,
                    buckets=buckets,
                ),
                Counter(
                    "microcall_client_attempts",
                    "Attempts sent, by kind: first, retry or hedge.",
                    (*_CLIENT_LABELS, "attempt_kind"),
                    registry=registry,
                ),
                Counter(
                    "microcall_client_attempts_refused",
                    "Attempts not sent: the retry or hedge budget was empty, or a breaker open.",
                    (*_CLIENT_LABELS, "attempt_kind", "reason"),
                    registry=registry,
                ),
                Gauge(
                    "http_client_active_requests",
                    "Logical calls in flight.",
                    _CLIENT_LABELS,
                    registry=registry,
                ),
                Gauge(
                    "microcall_client_breaker_state",
                    "1 for the current state of an endpoint's circuit breaker, 0 for the others.",
                    (*_ENDPOINT_LABELS, "state"),
                    registry=registry,
                ),
                Counter(
                    "microcall_client_breaker_transitions",
                    "Circuit breaker state changes, by the state entered.",
                    (*_ENDPOINT_LABELS, "state"),
                    registry=registry,
                ),
                Counter(
                    "microcall_client_ejections",
                    "Endpoints ejected by outlier detection.",
                    _ENDPOINT_LABELS,
                    registry=registry,
                ),
                Histogram(
                    "rpc_client_call_duration_seconds",
                    "Duration of logical gRPC calls: every attempt, backoff and hedge included.",
                    (*_RPC_LABELS, *_ENDPOINT_LABELS, "error_type"),
                    registry=registry,
                    buckets=buckets,
                ),
                Counter(
                    "microcall_client_cache_lookups",
                    "Cacheable calls, by how the response cache answered them "
                    "(hit, miss, revalidated, stale, coalesced).",
                    ("http_request_method", "status"),
                    registry=registry,
                ),
            )

        (
            self.call_duration,
            self.attempt_duration,
            self.attempts,
            self.refused,
            self.active,
            self.breaker_state,
            self.breaker_transitions,
            self.ejections,
            self.rpc_duration,
            self.cache_lookups,
        ) = _register(families)
        self._targets: dict[tuple[object, ...], _Target] = {}
        self._rpc_paths: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the observer

    def call_started(self, request: Request) -> _CallMetrics:
        url = request.url
        host = url.raw_host
        relative = request.path is not None
        scheme = url.scheme
        # The key holds only what the labels will, so calls to ever new hosts
        # (or with made-up methods) share one target instead of growing the cache.
        key: tuple[object, ...]
        if relative or host in self._known_hosts:
            key = (method_label(request.method), scheme, host, url.port, relative)
        else:
            key = (method_label(request.method), scheme)
        rpc_path = None
        if scheme in GRPC_SCHEMES:
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
        rpc = None if rpc_path is None else split_rpc_method(rpc_path)
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
    """Label values and metric children for calls to one method and server."""

    __slots__ = (
        "_attempt_children",
        "_call_children",
        "_endpoints",
        "_kind_children",
        "_owner",
        "active",
        "labels",
        "relative",
        "rpc",
    )

    def __init__(
        self,
        owner: ClientMetrics,
        labels: tuple[str, str, str],
        relative: bool,
        rpc: tuple[str, str] | None,
    ) -> None:
        self._owner = owner
        self.labels = labels
        self.relative = relative
        self.rpc = rpc
        self.active = owner.active.labels(*labels)
        self._call_children: dict[tuple[object, ...], Any] = {}
        self._attempt_children: dict[tuple[object, ...], Any] = {}
        self._kind_children: dict[tuple[object, ...], Any] = {}
        self._endpoints: dict[str, tuple[str, str, str]] = {}

    def call_ended(
        self, duration: float, response: Response | None, error: BaseException | None
    ) -> None:
        status = None if response is None else response.status_code
        key = (status, None if error is None else type(error))
        child = self._call_children.get(key)
        if child is None:
            child = self._call_child(status, error)
            self._call_children[key] = child
        child.observe(duration)

    def _call_child(self, status: int | None, error: BaseException | None) -> Any:
        owner = self._owner
        if self.rpc is None:
            return owner.call_duration.labels(
                *self.labels, status_label(status), client_error_type(status, error)
            )
        code = _grpc_code(error, status)
        return owner.rpc_duration.labels(
            "grpc",
            *self.rpc,
            grpc_status_label(code),
            *self.labels[1:],
            "" if error is None else type(error).__name__,
        )

    def attempt_ended(self, attempt: Attempt) -> None:
        endpoint = self._endpoint(attempt.endpoint)
        kind = attempt.kind
        if not attempt.sent:
            reason = _REFUSALS.get(attempt.error or "", OTHER)
            key: tuple[object, ...] = ("refused", endpoint, kind, reason)
            child = self._kind_children.get(key)
            if child is None:
                child = self._owner.refused.labels(*endpoint, str(kind), reason)
                self._kind_children[key] = child
            child.inc()
            return
        key = (endpoint, kind)
        child = self._kind_children.get(key)
        if child is None:
            child = self._owner.attempts.labels(*endpoint, str(kind))
            self._kind_children[key] = child
        child.inc()
        error = _attempt_error(attempt)
        key = (endpoint, kind, attempt.status, error)
        child = self._attempt_children.get(key)
        if child is None:
            child = self._owner.attempt_duration.labels(
                *endpoint, str(kind), status_label(attempt.status), error
            )
            self._attempt_children[key] = child
        child.observe(attempt.duration)

    def _endpoint(self, name: str) -> tuple[str, str, str]:
        """Labels for an attempt's endpoint: the replica it went to, for calls on the base URL."""
        if not self.relative or not name:
            return self.labels
        labels = self._endpoints.get(name)
        if labels is None:
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
        target = self._target
        target.call_ended(time.perf_counter() - self._start, response, error)
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
    """Server metrics: pass it in ``ServerOptions(observers=[...])``, share it between middlewares."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        buckets = tuple(buckets)

        def families() -> tuple[Any, ...]:
            return (
                Histogram(
                    "http_server_request_duration_seconds",
                    "Duration of HTTP requests served, refused ones included.",
                    ("http_request_method", "http_route", *_RESULT_LABELS),
                    registry=registry,
                    buckets=buckets,
                ),
                Gauge(
                    "http_server_active_requests",
                    "HTTP requests being served.",
                    ("http_request_method",),
                    registry=registry,
                ),
                Counter(
                    "microcall_server_expired",
                    "Requests refused because their deadline had passed on arrival.",
                    ("priority",),
                    registry=registry,
                ),
                Counter(
                    "microcall_server_shed",
                    "Requests refused by the concurrency limit.",
                    ("priority",),
                    registry=registry,
                ),
                Histogram(
                    "rpc_server_call_duration_seconds",
                    "Duration of gRPC calls served, refused ones included.",
                    _RPC_LABELS,
                    registry=registry,
                    buckets=buckets,
                ),
                Gauge(
                    "rpc_server_active_calls",
                    "gRPC calls being served.",
                    ("rpc_system",),
                    registry=registry,
                ),
            )

        (
            self.duration,
            self.active,
            self.expired,
            self.shed,
            self.rpc_duration,
            self.rpc_active,
        ) = _register(families)

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
        self, owner: ServerMetrics, protocol: str, method: str, active: Any, start: float
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
