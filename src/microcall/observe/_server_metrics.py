"""ServerMetrics: the server's families, and how a request served lands in them.

The families are listed in :mod:`microcall.observe.prometheus`; gRPC's
(``rpc_server_*``) come from :mod:`~microcall.observe._grpc_metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from microcall.observe._buckets import DURATION_BUCKETS
from microcall.observe._grpc_metrics import (
    MethodPaths,
    server_active_calls,
    server_call_duration,
    server_call_labels,
)
from microcall.observe._labels import (
    OTHER,
    RESULT_LABELS,
    method_label,
    route_label,
    server_error_type,
    status_label,
)
from microcall.observe._registry import register, registry_or_global
from microcall.observe._series import Moves, SeriesCollector
from microcall.observe.hooks import InboundRequest, ServerResult


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
        registry = registry_or_global(registry)
        self.registry = registry
        # Every family moves per request (the refusal counters under
        # overload, when cost matters most): all are sharded.
        families = self._families = SeriesCollector()
        self.duration = families.histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests served, refused ones included.",
            ("http_request_method", "http_route", *RESULT_LABELS),
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
        self.rpc_duration = server_call_duration(families, buckets)
        self.rpc_active = server_active_calls(families)
        self.rpc_paths = MethodPaths()
        register(registry, self)

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
            route = result.route
            if route is not None:
                route = owner.rpc_paths.bounded(route)
            owner.rpc_duration.labels(*server_call_labels(route, result.status)).observe(duration)
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
