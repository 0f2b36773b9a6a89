"""How the gRPC server interceptors report calls to ``ServerOptions.observers``.

The interceptors speak the HTTP middlewares' interface
(:mod:`microcall.observe.hooks`, through :class:`ServerWatch`), so
``ServerMetrics`` and ``ServerTracing`` serve both protocols unchanged:

* arrival: an :class:`InboundRequest` with ``protocol="grpc"``, the full
  method name as ``method`` and ``path``, and a lookup over the invocation
  metadata (for ``traceparent``), made in the handler's own context (its
  task, or its worker thread) before admission;
* a refusal: the gate's reason and priority;
* the end: ``handler_done`` in that same context, then the numeric status
  code the call ends with, the method as its route (only methods the server
  has reach a wrapped handler; an unknown one is reported with no route, so
  a scanner cannot grow the labels), and the exception that escaped, if any.

How a call ends, in status codes: what the handler set (``set_code``) or
aborted with, OK when it set nothing; UNKNOWN when an exception escaped it;
DEADLINE_EXCEEDED or CANCELLED when grpc cancelled it (not the handler's
error: the caller left).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Final

import grpc
import grpc.aio

from microcall.observe.hooks import HeaderLookup, InboundRequest, ServerObserver
from microcall.server._serverwatch import ServerWatch

_OK: Final = 0
_CANCELLED: Final = 1
_UNKNOWN: Final = 2
_DEADLINE_EXCEEDED: Final = 4
_UNIMPLEMENTED: Final = 12


def start_watch(
    observers: Sequence[ServerObserver], method: str, metadata: Iterable[tuple[str, Any]] | None
) -> ServerWatch:
    """Tell the observers a call to ``method`` arrived carrying ``metadata``."""
    return ServerWatch(
        observers,
        InboundRequest(
            protocol="grpc",
            method=method,
            path=method,
            scheme="http",
            header=_lookup(tuple(metadata or ())),
        ),
    )


def unknown_method(
    observers: Sequence[ServerObserver],
    method: str,
    metadata: Iterable[tuple[str, Any]] | None,
    *,
    known: bool = False,
) -> None:
    """Report a call to a method the server does not have (grpc answers UNIMPLEMENTED).

    ``known``: the method is the servicer's, left unimplemented; its name is
    a bounded label (an unknown one is not).
    """
    watch = start_watch(observers, method, metadata)
    watch.handler_done()
    watch.ended(_UNIMPLEMENTED, method if known else None)


def finish(watch: ServerWatch, method: str, context: Any, error: BaseException | None) -> None:
    """The handler is done: report how the call ended.

    A response stream closed from outside (``GeneratorExit``: a call cut
    short, closed by asyncio's finaliser of async generators) may be closed
    in a context of its own: what its start made current there (a span) is
    not restored, which would fail ("Failed to detach context"), and its
    own context, its handler's, is being dropped with it anyway.
    """
    if not isinstance(error, GeneratorExit):
        watch.handler_done()
    code = status_code(context)
    if error is None:
        watch.ended(_OK if code is None else code, method)
    elif isinstance(error, grpc.aio.AbortError) or (type(error) is Exception and code):
        # An answer with a status (grpc's blocking abort raises a bare Exception).
        watch.ended(_UNKNOWN if code is None else code, method)
    elif isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        watch.ended(_DEADLINE_EXCEEDED if expired else _CANCELLED, method)
    else:
        watch.ended(_UNKNOWN, method, error)


def status_code(context: Any) -> int | None:
    """The status the handler set or aborted with, as a number; None when it set none."""
    try:
        code = context.code()
    except Exception:  # a servicer context without code() (an old grpcio, a test double)
        return None
    if code is None:
        return None
    if isinstance(code, grpc.StatusCode):
        number = code.value[0]
        return number if isinstance(number, int) else None
    return code if isinstance(code, int) else None


def _lookup(metadata: Sequence[tuple[str, Any]]) -> HeaderLookup:
    def header(name: str) -> str | None:
        wanted = name.lower()
        found = [value for key, value in metadata if key == wanted]
        # Binary (-bin) values and repeated keys carry no trace context.
        return found[0] if len(found) == 1 and isinstance(found[0], str) else None

    return header
