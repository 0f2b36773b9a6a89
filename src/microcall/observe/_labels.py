"""Label values that stay bounded whatever arrives from the network.

A metric's series are the product of its label values, so every value put
in a label comes from a small fixed set: methods outside the known list are
``_OTHER`` (OpenTelemetry's rule), status codes outside 100-599 are
``_OTHER``, an unmatched route is ``_OTHER``, and error types are class
names or status codes, both fixed by the code, never by the input.
"""

from __future__ import annotations

from typing import Final

OTHER: Final = "_OTHER"

# The labels naming how an HTTP call or request ended, client and server alike.
RESULT_LABELS: Final = ("http_response_status_code", "error_type")

# A request to one of these schemes is a gRPC call (``grpc://host:port/package.Service/Method``).
GRPC_SCHEMES: Final = frozenset({"grpc", "grpcs"})
# A request to one of these schemes is an RPC of the system named: gRPC, or a
# callable run by microcall.Resilience (``call:///<name>/call``).
RPC_SYSTEMS: Final = {"grpc": "grpc", "grpcs": "grpc", "call": "callable"}

# OpenTelemetry's HTTP semantic conventions: RFC 9110's methods plus PATCH
# (RFC 5789) and QUERY; anything else is reported as _OTHER, and so is a
# method in the wrong case (methods are case-sensitive).
KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)

_STATUS_TEXT: Final = {code: str(code) for code in range(100, 600)}
_GRPC_CODE_TEXT: Final = {code: str(code) for code in range(17)}


def method_label(method: str) -> str:
    """``method`` if it is a known HTTP method, else ``_OTHER``."""
    return method if method in KNOWN_METHODS else OTHER


def status_label(status: int | None) -> str:
    """The status code as text, ``""`` without one, ``_OTHER`` outside 100-599."""
    if status is None:
        return ""
    return _STATUS_TEXT.get(status, OTHER)


def grpc_status_label(code: int | None) -> str:
    """A numeric gRPC status code (0-16) as text, ``""`` without one, else ``_OTHER``."""
    if code is None:
        return ""
    return _GRPC_CODE_TEXT.get(code, OTHER)


def route_label(route: str | None) -> str:
    """The matched route template, or ``_OTHER`` when no route matched."""
    return route if route else OTHER


def client_error_type(status: int | None, error: BaseException | str | None) -> str:
    """OpenTelemetry's ``error.type`` for a client: the status code from 400 up, else the error's class."""
    if error is not None:
        return error if isinstance(error, str) else type(error).__name__
    if status is not None and status >= 400:
        return _STATUS_TEXT.get(status, OTHER)
    return ""


def server_error_type(status: int | None, error: str | None) -> str:
    """OpenTelemetry's ``error.type`` for a server: the error's class, else the status from 500 up."""
    if error is not None:
        return error
    if status is not None and status >= 500:
        return _STATUS_TEXT.get(status, OTHER)
    return ""


def split_rpc_method(full_name: str | None) -> tuple[str, str]:
    """``("package.Service", "Method")`` from ``/package.Service/Method``; ``_OTHER`` if unknown."""
    if not full_name:
        return OTHER, OTHER
    service, _, method = full_name.lstrip("/").rpartition("/")
    if not service or not method:
        return OTHER, OTHER
    return service, method


# grpc.StatusCode by name, so the observers need not import grpc to number a status.
GRPC_CODE_NUMBERS: Final = {
    name: number
    for number, name in enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
}

# What a client call that ended without a status from the server counts as:
# its deadline passed (DEADLINE_EXCEEDED), or its caller gave up (CANCELLED).
_CLIENT_CODES: Final = {
    "DeadlineExceeded": 4,
    "AttemptTimeout": 4,
    "CancelledError": 1,
}


def grpc_code_of(error: BaseException | None) -> int | None:
    """The numeric gRPC status a failed client call ended with, None when it has none.

    A ``GrpcStatusError`` keeps the server's ``code``; an expired deadline is
    DEADLINE_EXCEEDED and a cancelled call CANCELLED, as gRPC reports them.
    """
    if error is None:
        return None
    code = getattr(error, "code", None)
    if callable(code):  # grpc's errors, and microcall's gRPC ones, answer code()
        code = code()
    value = getattr(code, "value", None)  # grpc.StatusCode: (n, name)
    if isinstance(value, tuple) and value and isinstance(value[0], int):
        return value[0]
    for cls in type(error).__mro__:
        code = _CLIENT_CODES.get(cls.__name__)
        if code is not None:
            return code
    return None
