"""gRPC's families and their label values, in the client's and the server's collectors.

A gRPC call is counted by the same :class:`ClientMetrics` (through
``ObserverAdapter``) or :class:`ServerMetrics` (through the interceptors) as
an HTTP one, in families of its own named after OpenTelemetry's RPC
conventions::

    rpc_client_call_duration_seconds   rpc_system rpc_service rpc_method rpc_grpc_status_code
                                       server_address server_port error_type
    rpc_server_call_duration_seconds   rpc_system rpc_service rpc_method rpc_grpc_status_code
    rpc_server_active_calls            rpc_system

The method names calls are labelled with are bounded (:class:`MethodPaths`),
a client's and a server's alike: an unregistered method reaches a server's
metrics as no route, labelled ``_OTHER``, but a server with a catch-all
handler (a generic proxy, a gateway) serves whatever names arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from microcall.observe._labels import (
    GRPC_CODE_NUMBERS,
    OTHER,
    grpc_code_of,
    grpc_status_label,
    split_rpc_method,
)
from microcall.observe._series import Labelled, Moves, Observes, SeriesCollector

RPC_LABELS: Final = ("rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code")

# A client names the gRPC methods it calls in code, and a server registers
# those it serves, but a generic proxy may forward, and a catch-all handler
# serve, whatever names arrive: past this many, new methods count as _OTHER.
MAX_RPC_METHODS: Final = 1000


def client_call_duration(families: SeriesCollector, buckets: Sequence[float]) -> Labelled[Observes]:
    """``rpc_client_call_duration_seconds``: a logical gRPC call, by method, status and server."""
    return families.histogram(
        "rpc_client_call_duration_seconds",
        "Duration of logical gRPC calls (and resilient callables' calls): every attempt, "
        "backoff and hedge included.",
        (*RPC_LABELS, "server_address", "server_port", "error_type"),
        buckets=buckets,
    )


def server_call_duration(families: SeriesCollector, buckets: Sequence[float]) -> Labelled[Observes]:
    """``rpc_server_call_duration_seconds``: a gRPC call served, by method and status."""
    return families.histogram(
        "rpc_server_call_duration_seconds",
        "Duration of gRPC calls served, refused ones included.",
        RPC_LABELS,
        buckets=buckets,
    )


def server_active_calls(families: SeriesCollector) -> Labelled[Moves]:
    """``rpc_server_active_calls``: gRPC calls being served."""
    return families.gauge("rpc_server_active_calls", "gRPC calls being served.", ("rpc_system",))


class MethodPaths:
    """The method paths one client's or server's calls are labelled with: at most MAX_RPC_METHODS."""

    __slots__ = ("_lock", "_paths")

    def __init__(self) -> None:
        self._paths: set[str] = set()
        self._lock = threading.Lock()

    def bounded(self, path: str) -> str:
        """``path`` (``/package.Service/Method``) while few methods are known, then ``""``."""
        paths = self._paths
        if path in paths:
            return path
        with self._lock:
            if len(paths) < MAX_RPC_METHODS:
                paths.add(path)
                return path
        return ""  # labelled _OTHER


def client_call_labels(
    rpc: tuple[str, str, str],
    endpoint: Sequence[str],
    status: int | None,
    error: BaseException | None,
) -> tuple[str, ...]:
    """The label values of a client call that ended so (``rpc``: its system, service and method)."""
    # A wrapped callable has no gRPC status: its outcome is its error_type alone.
    code = None if rpc[0] != "grpc" else status if error is None else grpc_code_of(error)
    return (
        *rpc,
        grpc_status_label(code),
        *endpoint,
        "" if error is None else type(error).__name__,
    )


def attempt_code_label(code: str) -> str:
    """An attempt's ``error_type`` from the status it ended with (a ``grpc.StatusCode`` name)."""
    return code if code in GRPC_CODE_NUMBERS else OTHER


def server_call_labels(route: str | None, status: int | None) -> tuple[str, str, str, str]:
    """The label values of a call served: ``route`` is its full method name."""
    service, method = split_rpc_method(route)
    return ("grpc", service, method, grpc_status_label(status))
