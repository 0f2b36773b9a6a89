"""How observers see a callable's calls: in the words of HTTP and gRPC calls.

The same :class:`~microcall.observe.Observer` that follows a client's HTTP
calls (``ClientMetrics``, ``ClientTracing``, a test's recorder) follows a
callable's, as it follows a gRPC channel's through ``ObserverAdapter``.
The HTTP engine's own fan-out tells them (:class:`microcall._call_watch.Watch`,
which never lets an observer break the call):

* a call is a ``Request`` ``CALL call:///<name>/call`` (``route`` and
  ``endpoint`` are the name). Metrics and traces read the ``call`` scheme as
  an RPC of the system ``callable``: ``rpc_service`` is the name,
  ``rpc_method`` is ``call``, and the call's span is named after the name;
* each attempt starts with that URL and an empty ``headers`` dict, and ends
  with an :class:`~microcall.Attempt` whose ``endpoint`` is the name and
  whose ``error`` is the exception's class name (never its message, which
  may carry credentials);
* the call ends with no response either way: ``call_ended(None, None,
  attempts)`` after an answer, ``call_ended(None, error, attempts)`` after a
  failure (the error raised to the caller).

What a tracer writes into an attempt's ``headers`` (``traceparent``) is made
the current OpenTelemetry context while that attempt runs, when
``opentelemetry-api`` is installed: the calls the callable makes (HTTP calls
through microcall, a database driver's own spans) are children of the
attempt's span, as they would be of an HTTP attempt's on the next hop.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from yarl import URL

from microcall._request import Request

# The scheme observers read as "a wrapped callable" (observe/_labels.py).
CALL_SCHEME = "call"
# Not an HTTP method: metrics label it _OTHER where they name one.
CALL_METHOD = "CALL"


def request_for(name: str) -> Request:
    """The request observers are shown for a call named ``name``."""
    url = URL.build(scheme=CALL_SCHEME, path=f"/{name}/call")
    return Request(CALL_METHOD, url, {}, path=name, route=name, endpoint=name)


# ---------------------------------------------------------------- trace context


@cache
def _otel() -> tuple[Any, Any] | None:
    """opentelemetry's context and propagate modules, or None without the [otel] extra."""
    try:
        from opentelemetry import context, propagate
    except ImportError:
        return None
    return context, propagate


def enter_trace(headers: Mapping[str, str]) -> object | None:
    """Make the trace context an observer wrote in ``headers`` current; a token for :func:`exit_trace`."""
    if not headers:
        return None
    otel = _otel()
    if otel is None:
        return None
    context, propagate = otel
    token: object = context.attach(propagate.extract(dict(headers)))
    return token


def exit_trace(token: object | None) -> None:
    """Restore the trace context :func:`enter_trace` replaced."""
    if token is not None:
        otel = _otel()
        assert otel is not None
        otel[0].detach(token)
