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
                                              (retry_budget, hedge_budget, circuit_open,
                                              body_not_replayable)
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

This module is the public face; the parts live apart: ``_client_metrics``
(``ClientMetrics``), ``_server_metrics`` (``ServerMetrics``) and
``_grpc_metrics`` (gRPC's families in both, and the bound on method names).
"""

from __future__ import annotations

from microcall.observe._client_metrics import ClientMetrics
from microcall.observe._grpc_metrics import MAX_RPC_METHODS as MAX_RPC_METHODS
from microcall.observe._server_metrics import ServerMetrics

__all__ = ["ClientMetrics", "ServerMetrics"]
