"""Observability: metrics, traces and logs for every call and every request served.

One small interface underneath (:mod:`microcall.observe.hooks`): clients
report calls and attempts to their ``observers=``, server middlewares report
requests to ``ServerOptions(observers=...)``. The backends plug into it:

* :mod:`microcall.observe.prometheus`: ``ClientMetrics``, ``ServerMetrics``
  (needs the ``[prometheus]`` extra), and :mod:`microcall.observe.exposition`
  for ``/metrics``;
* :mod:`microcall.observe.tracing`: ``ClientTracing``, ``ServerTracing``
  (needs the ``[otel]`` extra);
* :class:`LogEvents`: rate-limited log lines for budget exhaustion and shedding;
* :func:`timed`: any function's duration as a histogram.

Importing this package imports neither prometheus-client nor OpenTelemetry,
and registers nothing. See docs/observability.md.
"""

from microcall.observe._ratelimit import LogLimitConfig, LogLimiter
from microcall.observe.hooks import (
    AttemptScope,
    CallScope,
    InboundRequest,
    Observer,
    ServerObserver,
    ServerResult,
    ServerScope,
)
from microcall.observe.logs import LogEvents, log_event
from microcall.observe.timed import timed

__all__ = [
    "AttemptScope",
    "CallScope",
    "InboundRequest",
    "LogEvents",
    "LogLimitConfig",
    "LogLimiter",
    "Observer",
    "ServerObserver",
    "ServerResult",
    "ServerScope",
    "log_event",
    "timed",
]
